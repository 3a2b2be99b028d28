"""A screenshot of TensorBoard showing a FIND run, taken by headless Chromium (the README's picture).

How to run (needs ``tensorboard`` (``pip install 'find_rl[tensorboard]'``) and a ``chromium`` binary on PATH, e.g.
Debian's ``apt-get install chromium``)::

    python bench/tensorboard_screenshot.py --out docs/tensorboard.png                 # trains a short run first (~1 min)
    python bench/tensorboard_screenshot.py --run runs/find --out docs/tensorboard.png # an existing run folder

Trains ``python -m find_rl.train`` for ``--iterations`` iterations with image grids every 5 (unless ``--run`` names a
run folder), serves the run with ``tensorboard --logdir RUN`` on 127.0.0.1, lets Chromium render its Time Series page
(scalars and image grids, filtered by ``--filter``) to ``--out``, and stops the TensorBoard it started.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("docs/tensorboard.png"))
    p.add_argument("--run", type=Path, default=None, help="a run folder to show (default: train a short run first)")
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--filter", default="alignment|clip_fraction|approx_kl|advantage_std|images",
                   help="TensorBoard's tag filter (a regular expression)")
    p.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser") or "chromium")
    p.add_argument("--window", default="1600,1300", help="Chromium's window size, WIDTH,HEIGHT")
    args = p.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    run = args.run
    if run is None:
        run = Path(tempfile.mkdtemp()) / "find"
        subprocess.run([sys.executable, "-m", "find_rl.train", "--out", str(run), "--iterations", str(args.iterations),
                        "--image-every", "5", "--eval-samples", "0"], check=True)
    port = _free_port()
    board = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(run), "--host", "127.0.0.1",
                              "--port", str(port), "--reload_interval", "1"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=2)
                break
            except OSError:
                if board.poll() is not None:
                    raise SystemExit("tensorboard exited early; is it installed? pip install 'find_rl[tensorboard]'")
                time.sleep(1)
        time.sleep(3)  # let it load the event files
        url = f"http://127.0.0.1:{port}/?darkMode=false#timeseries&tagFilter={urllib.parse.quote(args.filter)}"
        subprocess.run([args.chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--window-size={args.window}", "--virtual-time-budget=20000",
                        f"--screenshot={args.out.resolve()}", url], check=True, capture_output=True, timeout=180)
        print(f"wrote {args.out}")
    finally:
        board.terminate()
        board.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
