"""The learning-curve facts of finished runs, from their ``progress.jsonl``: iterations (and reward evaluations per
prompt) until the 5-iteration mean of the training-batch alignment first reaches ``--target``, the share of iterations
in which the PPO clip bound, the mean clip fraction and the per-update approximate KL.

How to run (on ``find_rl.train`` folders or a comparison's ``runs/<method>_s<seed>`` folders)::

    python bench/run_curves.py --target 0.85 runs/compare/runs/find_s0 runs/compare/runs/find_s1 ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--target", type=float, default=0.85)
    p.add_argument("runs", nargs="+", type=Path)
    args = p.parse_args(argv)
    print(f"| run | iterations to {args.target} (evals/prompt) | iterations the clip binds | mean clip fraction | median / max approx KL |")
    print("|---|---|---|---|---|")
    for run in args.runs:
        rows = [json.loads(ln) for ln in (run / "progress.jsonl").read_text().splitlines() if ln.strip()]
        a = np.array([r["alignment"] for r in rows])
        smooth = np.convolve(a, np.ones(5) / 5, mode="valid")
        hit = np.flatnonzero(smooth >= args.target)
        reach = f"{hit[0] + 5} ({rows[hit[0] + 4]['reward_evals_per_prompt']})" if len(hit) else "never"
        cf, kl = np.array([r["clip_fraction"] for r in rows]), np.array([r["approx_kl"] for r in rows])
        print(f"| {run.name} | {reach} | {np.mean(cf > 0):.0%} | {cf.mean():.3f} | {np.median(kl):.4f} / {kl.max():.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
