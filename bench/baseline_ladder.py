"""The baseline ladder (issue: FIND's mechanisms must earn their place): calibrated g vs the prompt's batch mean vs a
running per-prompt mean vs none, at equal budget, 3 seeds, at several batch sizes (samples per prompt per iteration).

How to run (~45 min on 2 cores; each batch size is one ``python -m find_rl.compare`` with its own cache, so a rerun
reuses finished runs)::

    python bench/baseline_ladder.py --out runs/ladder --budget 1280 --sizes 2 4 32 --seeds 0,1,2 --threads 1
    python bench/baseline_ladder.py --out runs/ladder --table        # print the table from the finished reports

Many prompts: ``--all-prompts`` trains and scores on all nine shapes prompts (the world has no more; the three common
ones are easy, so the figure is over all nine); ``--baselines calibrated mean`` runs only those two.

Every size spends the same ``--budget`` reward evaluations per prompt (iterations = budget / size), on the six rare
shapes prompts, scored on 256 fresh samples per prompt and seed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

METHODS = {"calibrated (g)": "find+baseline=calibrated", "batch mean": "find+baseline=mean",
           "running mean (ema)": "find+baseline=ema", "none": "find-nocal"}
BASELINES = {"calibrated": "calibrated (g)", "mean": "batch mean", "ema": "running mean (ema)", "none": "none"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--budget", type=int, default=1280)
    p.add_argument("--sizes", type=int, nargs="+", default=[2, 4, 32])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--all-prompts", action="store_true", help="train and score on all nine prompts (default: the six rare)")
    p.add_argument("--baselines", nargs="+", choices=list(BASELINES), default=list(BASELINES))
    p.add_argument("--table", action="store_true", help="only print the table of the finished reports")
    args = p.parse_args(argv)
    methods = {label: m for label, m in METHODS.items() if label in {BASELINES[b] for b in args.baselines}}
    if not args.table:
        from find_rl.compare.cli import main as compare

        for size in args.sizes:
            from find_rl.worlds.shapes.world import all_prompts

            prompts = ["--prompts", *all_prompts()] if args.all_prompts else []
            rc = compare(["--methods", ",".join(["base", *methods.values()]), "--out", str(args.out / f"spp{size}"),
                          "--seeds", args.seeds, "--threads", str(args.threads), "--samples-per-prompt", str(size),
                          "--iterations", str(args.budget // size), *prompts])
            if rc:
                return rc
    print(f"{'All-prompt' if args.all_prompts else 'Rare-prompt'} alignment on fresh samples, mean ± 95% t-interval over seeds; {args.budget} reward evaluations per "
          "prompt at every size; (aligned diversity kept); [per seed].\n")
    print("| baseline | " + " | ".join(f"{s} samples/prompt x {args.budget // s} it." for s in args.sizes) + " |")
    print("|---|" + "---|" * len(args.sizes))
    for label, method in methods.items():
        cells = []
        for size in args.sizes:
            f = args.out / f"spp{size}" / "summary.json"
            m = json.loads(f.read_text())["methods"].get(method) if f.is_file() else None
            if m is None:
                cells.append("—")
                continue
            kept = f" ({m['aligned_kept']['mean']:.0%})" if "aligned_kept" in m else ""
            per_seed = []
            for seed in args.seeds.split(","):
                run = json.loads((args.out / f"spp{size}" / "runs" / f"{method}_s{seed}" / "method.json").read_text())
                per_seed.append(sum(r["alignment"] for r in run["per_prompt"].values()) / len(run["per_prompt"]))
            cells.append(f"{m['alignment']['mean']:.3f} ± {m['alignment']['ci95']:.3f}{kept} [{' / '.join(f'{v:.2f}' for v in per_seed)}]")
        print(f"| {label} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
