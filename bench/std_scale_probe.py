"""Probe (issue 3, diversity): does widening a learned FIND distribution (sigma x s, mean unchanged) buy diversity
without losing alignment? Scores a trained policy's prompts on 256 fresh samples at each scale, next to the frozen model.

    python bench/std_scale_probe.py --policy runs/compare/runs/find_s0 --scales 1 1.25 1.5 --threads 2
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from find_rl.evaluate import evaluate_distributions
from find_rl.policies.export import load_policy


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--policy", required=True)
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0, 1.25, 1.5])
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--seed", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    pol = load_policy(a.policy)
    base = evaluate_distributions(prompts=pol.prompts, samples=a.samples, seed=a.seed)
    for s in a.scales:
        res = evaluate_distributions(prompts=pol.prompts, mean=pol.mean, std=pol.std * s, samples=a.samples, seed=a.seed)
        align = np.mean([res[p]["alignment"] for p in pol.prompts])
        strict = np.mean([res[p]["strict_alignment"] for p in pol.prompts])
        kept = np.mean([res[p]["diversity"] / base[p]["diversity"] for p in pol.prompts])
        print(f"sigma x {s:<5g} alignment {align:.3f}  strict {strict:.3f}  diversity kept {kept:.0%}", flush=True)


if __name__ == "__main__":
    main()
