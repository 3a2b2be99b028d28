"""The suite's exit hook (``tests/session_exit.py``): a pytest process that used Ray ends without interpreter
finalisation and keeps pytest's exit status; one that never imported Ray ends the ordinary way."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

BODY = '''{imports}

class Loud:
    def __del__(self):
        print("FINALISED", flush=True)


kept = Loud()  # a module global: collected at interpreter finalisation, never after os._exit
'''


def _pytest(tmp_path: Path, tests: str, imports: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_probe.py").write_text(BODY.format(imports=imports) + tests)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "session_exit", "-p", "no:cacheprovider",
                           "test_probe.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("tests, code, summary", [
    ("\ndef test_ok():\n    assert True\n", 0, "1 passed"),
    ("\ndef test_bad():\n    assert False\n", 1, "1 failed"),
    ("", 5, "no tests ran"),
])
def test_a_session_that_used_ray_keeps_its_exit_status_and_skips_finalisation(tmp_path, tests, code, summary):
    proc = _pytest(tmp_path, tests, "import ray")
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert summary in proc.stdout  # the report was flushed before the process left
    assert "FINALISED" not in proc.stdout


def test_a_session_without_ray_exits_the_ordinary_way(tmp_path):
    proc = _pytest(tmp_path, "\ndef test_bad():\n    assert False\n", "import json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FINALISED" in proc.stdout
