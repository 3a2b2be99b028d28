"""The rejection ceiling of aligned diversity, shipped with the shapes model: for every shapes prompt, the frozen
model's own aligned images (rejection sampling from N(0, I)), their mean pairwise distance and count.

How to run (writes the file ``find_rl.evaluation.scoring.load_aligned_ceiling`` reads; ~2 min on 2 cores)::

    python bench/aligned_ceiling.py --min-aligned 64 --out find_rl/worlds/shapes/model/aligned_ceiling.json

"Aligned diversity kept" in ``results.md``, ``evaluate`` and the comparison is a method's diversity among its aligned
images divided by this.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--min-aligned", type=int, default=64)
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from find_rl.diffusion.sampler import DiffusionSampler
    from find_rl.evaluation.scoring import aligned_ceiling
    from find_rl.worlds.shapes.world import all_prompts

    from find_rl.diffusion.sampler import SamplerSettings

    settings = SamplerSettings()
    sampler = DiffusionSampler.from_pretrained("shapes", settings)
    prompts = all_prompts()
    res = aligned_ceiling(sampler, prompts, min_aligned=args.min_aligned, seed=args.seed)
    for prompt, r in res.items():
        print(f"{prompt:<18} {r['aligned_count']:>4} aligned of {r['samples']:>5}  diversity {r['aligned_diversity']:.2f}")
    args.out.write_text(json.dumps({"command": f"python bench/aligned_ceiling.py --min-aligned {args.min_aligned} --seed {args.seed}",
                                    "machine": f"{platform.machine()}, torch {torch.__version__}", "sampler": settings.to_dict(),
                                    "prompts": res}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
