"""Score the frozen model (``--policy base``) or a learned noise policy on fresh samples.

How to run::

    python -m find_rl.evaluate --policy base --samples 256 --json base.json
    python -m find_rl.evaluate --policy runs/find --samples 256
    python -m find_rl.evaluate --methods base,best-of-16,cem,ddpo,find --out runs/compare   # FIND vs baselines (find_rl.compare)

The scoring itself (alignment with a 95% Wilson interval, strict alignment, diversity) is :mod:`find_rl.evaluation.scoring`;
``--methods`` hands over to the comparison's command line (:mod:`find_rl.compare.cli`). No Ray is needed here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from find_rl.diffusion.sampler import SamplerSettings
from find_rl.evaluation.scoring import (diversity, evaluate_base, evaluate_distributions, evaluate_policy,  # noqa: F401  (the library API)
                             score_image_sets, wilson_interval)


def format_table(result: dict) -> str:
    lines = [f"policy {result['policy']}  model {result['model']}  samples/prompt {result['samples']}  seed {result['seed']}",
             f"{'prompt':<20} {'kind':<7} {'alignment [95% CI]':<24} {'strict':>7} {'diversity':>10} {'n':>5}"]
    groups: dict[str, list[float]] = {}
    for p, r in result["prompts"].items():
        kind = {True: "rare", False: "common", None: "-"}[r["rare"]]
        groups.setdefault(kind, []).append(r["alignment"])
        ci = f"{r['alignment']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
        lines.append(f"{p:<20} {kind:<7} {ci:<24} {r['strict_alignment']:>7.3f} {r['diversity']:>10.2f} {r['samples']:>5}")
    for kind, vals in groups.items():
        lines.append(f"mean over {kind} prompts: {np.mean(vals):.3f} ({len(vals)} prompts)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a == "--methods" or a.startswith("--methods=") for a in argv):  # the comparison has its own command line
        from find_rl.compare.cli import main as compare_main

        return compare_main(argv)
    p = argparse.ArgumentParser(prog="python -m find_rl.evaluate", description="Score the frozen model or a learned noise policy.")
    p.add_argument("--policy", default="base", help="'base' (N(0, I) noise) or a folder written by find_rl.train")
    p.add_argument("--methods", default=None, help="compare methods instead: see python -m find_rl.compare --help")
    p.add_argument("--model", default=None, help="model: 'shapes' (default for base), a pipeline folder or a hub id; overrides a policy's")
    p.add_argument("--device", default=None, help="device to render on (default: cpu for base, the policy's otherwise)")
    p.add_argument("--prompts", nargs="+", default=None, help="prompts to score (default: all shapes prompts / the policy's)")
    p.add_argument("--samples", type=int, default=256, help="samples per prompt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = p.parse_args(argv)
    try:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
        if args.samples < 2:
            raise ValueError(f"--samples must be >= 2 (diversity compares pairs of images), got {args.samples}")
        if args.json is not None and args.json.parent and not args.json.parent.exists():
            raise ValueError(f"--json folder {args.json.parent} does not exist; create it first")
        if args.policy == "base":
            result = evaluate_base(model=args.model or "shapes", prompts=args.prompts, samples=args.samples, seed=args.seed,
                                   settings=SamplerSettings(device=args.device or "cpu"))
        else:
            result = evaluate_policy(args.policy, samples=args.samples, seed=args.seed, prompts=args.prompts, model=args.model,
                                     device=args.device)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
