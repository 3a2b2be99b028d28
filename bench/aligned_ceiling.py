"""The rejection ceiling of aligned diversity, shipped with a world's model: for every prompt, the frozen model's own
aligned images (rejection sampling from N(0, I)), their mean pairwise distance (pixels and, in a world with factors,
the objects' positions and sizes) and count.

How to run (writes the file ``find_rl.evaluation.scoring.load_aligned_ceiling`` reads)::

    python bench/aligned_ceiling.py --min-aligned 256 --out find_rl/worlds/shapes/model/aligned_ceiling.json   # ~2 min
    python bench/aligned_ceiling.py --world scenes --min-aligned 256 \\
        --out find_rl/worlds/scenes/model/aligned_ceiling.json      # the default rare set, ~4 min on 2 cores

The sampler flags are ``train``'s (``--scheduler``, ``--num-inference-steps``, ``--guidance-scale``, ...): a reference
is keyed on them and applies only to runs rendered the same way.

"Aligned diversity kept" in ``results.md``, ``evaluate`` and the comparison is a method's diversity among its aligned
images divided by this (scenes: on factors as well). Prompts: every shapes prompt; for scenes the world's default
training set unless ``--prompts`` names others (a prompt outside the file reports "—").
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch


#: sampler settings the recorded command repeats when given (the others: the world's sampler)
SAMPLER_FLAGS = (("scheduler", "--scheduler"), ("num_inference_steps", "--num-inference-steps"),
                 ("guidance_scale", "--guidance-scale"), ("guidance_rescale", "--guidance-rescale"),
                 ("guidance_stop", "--guidance-stop"), ("eta", "--eta"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--world", default="shapes", choices=("shapes", "scenes"))
    p.add_argument("--prompts", nargs="+", help="default: every shapes prompt; scenes: the world's default training set")
    p.add_argument("--min-aligned", type=int, default=64)
    p.add_argument("--max-samples", type=int, default=32768, help="render at most this many images per prompt")
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, required=True)
    from find_rl.core.fields import add_arguments, from_args
    from find_rl.core.settings import SamplerSettings

    add_arguments(p.add_argument_group("sampler (a reference applies only to runs under the same sampler settings)"),
                  SamplerSettings)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from find_rl.diffusion.sampler import DiffusionSampler
    from find_rl.evaluation.scoring import aligned_ceiling
    from find_rl.worlds import get_world

    world = get_world(args.world)
    prompts = args.prompts or (world.prompts() if args.world == "shapes" else world.default_prompts())
    for prompt in prompts:
        world.check_prompt(prompt)
    try:
        settings = from_args(SamplerSettings, args)
    except ValueError as e:
        p.error(str(e))
    sampler = DiffusionSampler.from_pretrained(args.world, settings)
    res = aligned_ceiling(sampler, prompts, min_aligned=args.min_aligned, max_samples=args.max_samples, seed=args.seed,
                          world=world)
    for prompt, r in res.items():
        factor = r.get("aligned_factor_diversity")
        print(f"{prompt:<42} {r['aligned_count']:>5} aligned of {r['samples']:>6}  diversity {r['aligned_diversity'] or 0:.2f}"
              + ("" if factor is None else f"  factors {factor:.2f}"))
    command = "python bench/aligned_ceiling.py" + ("" if args.world == "shapes" else f" --world {args.world}") + \
        (f" --prompts {' '.join(map(repr, args.prompts))}" if args.prompts else "") + f" --min-aligned {args.min_aligned} --seed {args.seed}" + \
        "".join(f" {flag} {getattr(settings, name)}" for name, flag in SAMPLER_FLAGS if getattr(settings, name) is not None)
    args.out.write_text(json.dumps({"command": command, "machine": f"{platform.machine()}, torch {torch.__version__}",
                                    "sampler": sampler.settings.to_dict(), "prompts": res}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
