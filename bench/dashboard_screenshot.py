"""Screenshots of the Ray dashboard during a real FIND run, taken by headless Chromium.

How to run (needs a ``chromium`` binary on PATH, e.g. Debian's ``apt-get install chromium``)::

    python bench/dashboard_screenshot.py --out docs

Starts ``python -m find_rl.train --dashboard`` (2 env-runner actors, 1 reward-scorer actor, 60 iterations) in its
own Ray instance, waits until the dashboard answers on 127.0.0.1 and training has started, then lets Chromium
render the Overview, Actors and Jobs pages to ``OUT/dashboard_<page>.png``, and stops the run it started (its
process group) when done. Ray's token auth is disabled for this private, 127.0.0.1-bound demo instance only, so
that the pages render without a login.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PAGES = {"overview": "#/overview", "actors": "#/actors", "jobs": "#/jobs"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("docs"))
    p.add_argument("--port", type=int, default=8265)
    p.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser") or "chromium")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp()) / "dashboard-run"
    env = os.environ | {"RAY_AUTH_MODE": "disabled"}
    log = open(run_dir.parent / "train.log", "w")
    train = subprocess.Popen([sys.executable, "-m", "find_rl.train", "--out", str(run_dir), "--dashboard", "--dashboard-port", str(args.port), "--iterations", "60",
                              "--num-env-runners", "2", "--num-reward-workers", "1", "--eval-samples", "0"],
                             stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{args.port}/api/gcs_healthz", timeout=2)
                if (run_dir / "progress.jsonl").is_file() and (run_dir / "progress.jsonl").read_text().count("\n") >= 3:
                    break
            except OSError:
                pass
            if train.poll() is not None:
                raise SystemExit(f"the training run exited early; see {log.name}")
            time.sleep(2)
        for name, frag in PAGES.items():
            target = args.out / f"dashboard_{name}.png"
            subprocess.run([args.chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                            "--window-size=1440,900", "--virtual-time-budget=20000", f"--screenshot={target.resolve()}",
                            f"http://127.0.0.1:{args.port}/{frag}"], check=True, capture_output=True, timeout=120)
            print(f"wrote {target}")
    finally:
        os.killpg(train.pid, signal.SIGINT)  # the run this script started, and only it
        try:
            train.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(train.pid, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
