"""Probe (issue: beyond the paper, amortised policy): does one prompt's learned FIND mean work for another prompt?

For pairs (target, source) of the shapes world, scores the target prompt on 128 fresh samples from N(mu, sigma^2)
with mu = the target's own mean, the source's mean as is, the source's mean with the two colours' channels swapped,
the source's mean averaged over channels, and zero.

    python bench/transfer_probe.py --policy runs/compare/runs/find_s0 --threads 2
"""

from __future__ import annotations

import argparse

import torch

from find_rl.evaluate import evaluate_distributions
from find_rl.policies.export import load_policy

CHANNEL = {"red": 0, "green": 1, "blue": 2}
PAIRS = [("a green circle", "a blue circle"), ("a blue square", "a red square"), ("a red square", "a blue square"),
         ("a green triangle", "a red triangle")]


def swap(mu: torch.Tensor, a: str, b: str) -> torch.Tensor:
    idx = list(range(mu.shape[0]))
    idx[CHANNEL[a]], idx[CHANNEL[b]] = CHANNEL[b], CHANNEL[a]
    return mu[idx]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--policy", required=True)
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    pol = load_policy(a.policy)
    std = pol.std[0]

    def score(prompt: str, mu: torch.Tensor) -> float:
        return evaluate_distributions(prompts=[prompt], mean=mu[None], std=std[None], samples=a.samples, seed=123)[prompt]["alignment"]

    for target, source in PAIRS:
        own, src = pol.mean[pol.index(target)], pol.mean[pol.index(source)]
        tc, sc = target.split()[1], source.split()[1]
        print(f"{target}: own {score(target, own):.3f} | from {source}: as is {score(target, src):.3f}, colour channels "
              f"swapped {score(target, swap(src, sc, tc)):.3f}, channel mean {score(target, src.mean(0, keepdim=True).expand_as(src)):.3f}"
              f" | zero {score(target, torch.zeros_like(src)):.3f}", flush=True)


if __name__ == "__main__":
    main()
