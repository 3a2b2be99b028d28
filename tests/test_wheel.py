"""The wheel is complete: built from the source tree, installed non-editable into a scratch folder, it holds every
module and the shipped model files, imports every module, and runs every command's ``--help`` from there (an editable
install, as in CI and cluster.yaml, would hide a package missing from the wheel)."""

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ["find_rl.train", "find_rl.tune", "find_rl.evaluate", "find_rl.generate", "find_rl.compare",
            "find_rl.shapes.train_base", "find_rl.worlds.shapes.train_base"]


def _source_modules() -> set[str]:
    """Every module the source tree installs: find_rl/**, envs/ as find_rl.envs, tuning/ as find_rl.tuning."""
    out = set()
    for folder, pkg in (("find_rl", "find_rl"), ("envs", "find_rl/envs"), ("tuning", "find_rl/tuning")):
        for f in (ROOT / folder).rglob("*.py"):
            out.add(f"{pkg}/{f.relative_to(ROOT / folder).as_posix()}")
    return out


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(the wheel, the folder it was installed into with ``pip install --target``)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"  # a copy: building in the tree would leave build/ there, whose stale files a later wheel would hold
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "runs",
                                                             "__pycache__", ".pytest_cache", "docs", "bench"))
    isolation = [] if importlib.util.find_spec("setuptools") and importlib.util.find_spec("wheel") else None
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp / "dist"), str(src)]
    if isolation is not None:
        cmd.insert(4, "--no-build-isolation")
    subprocess.run(cmd, check=True, cwd=tmp, capture_output=True)
    wheel = next((tmp / "dist").glob("find_rl-*.whl"))
    site = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    return wheel, site


def _run(site: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(site))  # before site-packages, where the editable install's finder sits
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_wheel_holds_every_module_and_the_shipped_model(installed):
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(_source_modules() - names)
    assert not missing, f"modules missing from the wheel: {missing}"
    assert "find_rl/compare/__main__.py" in names
    assert "find_rl/worlds/shapes/model/model_index.json" in names
    assert any(n.startswith("find_rl/worlds/shapes/model/unet/") and n.endswith(".safetensors") for n in names)


def test_every_module_imports_and_every_command_runs_from_a_non_editable_install(installed, tmp_path):
    _, site = installed
    modules = sorted(n[:-3].replace("/", ".").removesuffix(".__init__") for n in _source_modules()
                     if not n.endswith("__main__.py"))  # a __main__ runs its command (checked with --help below)
    script = ("import importlib, find_rl, sys\n"
              f"assert find_rl.__file__.startswith({str(site)!r}), find_rl.__file__\n"
              f"for m in {modules!r}:\n"
              "    importlib.import_module(m)\n"
              "print('imported', len(sys.modules))\n")
    out = _run(site, ["-c", script], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    for command in COMMANDS:
        out = _run(site, ["-m", command, "--help"], tmp_path)
        assert out.returncode == 0 and "usage:" in out.stdout, f"{command}: {out.stderr[-1000:]}"
