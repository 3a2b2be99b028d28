"""Probe a change to the scenes model's recipe in a short budget: train, then score common and rare prompts per category.

Trains with ``train_model.train`` (the shipped recipe and architecture, but for the flags given) and scores the
model on the common and rare prompts of the default evaluation set (16 noise draws each, seed 0), per category; one
JSON line. Probes compare at equal wall time on one machine, each command alone.

``--image-size`` probes issue 23's fallback ("shrink the vocabulary or the image before you shrink the grammar"; the
vocabulary is at the issue's minimum, 6 colours and 4 shapes). The world's image side is one constant,
``geometry.IMAGE_SIZE`` (32); the script sets it before the world's renderer, scorer and pipeline are imported. At
24 px the world's 11- and 13-px sprites do not fit every relation scene (the renderer cannot place "a blue cross
right of a cyan square"), so a 24-px probe trains on 9-px sprites. The script changes nothing on disk but ``--out``
and the JSON line it appends to ``--log``.

    python bench/scenes_recipe_probe.py --steps 1000                                   # the recipe as shipped, ~410 s
    python bench/scenes_recipe_probe.py --steps 1000 --text-width 128 --text-layers 4  # a 2x wider, 2x deeper T5
    python bench/scenes_recipe_probe.py --steps 1000 --lr 0.004
    python bench/scenes_recipe_probe.py --steps 1000 --focus-fraction 0.8
    python bench/scenes_recipe_probe.py --image-size 24 --sizes 9 --steps 1390        # 24 px, the same ~400 s
    python bench/scenes_recipe_probe.py --patch-size 4 --widths 64 64 64 --steps 2250  # 4x4 patches, the same ~400 s
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--image-size", type=int, default=32, help="the world's image side (32 as shipped)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[11], help="sprite sides of the training data")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=None, help="default: train_model's")
    ap.add_argument("--batch-size", type=int, default=None, help="default: train_model's")
    ap.add_argument("--focus-fraction", type=float, default=None, help="default: train_model's")
    ap.add_argument("--text-width", type=int, default=None, help="the T5 encoder's width (default: the model's, 64)")
    ap.add_argument("--text-layers", type=int, default=None, help="the T5 encoder's layers (default: the model's, 2)")
    ap.add_argument("--patch-size", type=int, default=None, help="the UNet's patch side (default: the model's, 2)")
    ap.add_argument("--widths", type=int, nargs="+", default=None,
                    help="the UNet's block widths, one per resolution (default: the model's, 32 64 64)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--out", type=Path, default=None, help="save the trained pipeline here (optional)")
    ap.add_argument("--log", type=Path, default=None, help="append the result's JSON line here (optional)")
    args = ap.parse_args(argv)
    if args.image_size < 16 or args.image_size % 2:
        print(f"error: --image-size must be even and >= 16, got {args.image_size}", file=sys.stderr)
        return 2

    import find_rl.worlds.scenes.geometry as geometry

    geometry.IMAGE_SIZE = args.image_size  # before the renderer, the scorer and the pipeline read it

    import numpy as np
    import torch

    from find_rl.worlds.scenes import scorer
    from find_rl.worlds.scenes.baseline import render
    from find_rl.worlds.scenes.evaluation_set import default_eval_prompts
    from find_rl.worlds.scenes.grammar import parse_prompt
    from find_rl.worlds.scenes.pipeline import ScenesModelConfig
    from find_rl.worlds.scenes.splits import split_of
    from find_rl.worlds.scenes.train_model import TrainConfig, train

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    recipe = {k: v for k, v in (("lr", args.lr), ("focus_fraction", args.focus_fraction), ("batch_size", args.batch_size))
              if v is not None}
    model = {k: v for k, v in (("text_hidden", args.text_width), ("text_layers", args.text_layers)) if v is not None}
    model |= {k: v for k, v in (("patch_size", args.patch_size),
                                ("block_out_channels", tuple(args.widths) if args.widths else None)) if v is not None}
    if "text_hidden" in model:
        model["text_intermediate"] = 2 * model["text_hidden"]
    pipe, record = train(TrainConfig(steps=args.steps, seed=args.seed, sizes=tuple(args.sizes), log_every=250, **recipe),
                         ScenesModelConfig(**model), log=lambda m: print(m, flush=True))
    if pipe.latent_shape != (3, args.image_size, args.image_size):
        raise RuntimeError(f"the pipeline draws {pipe.latent_shape}, not a {args.image_size}-px image")
    pipe.set_progress_bar_config(disable=True)
    if args.out:
        pipe.save_pretrained(args.out)
    result = {"image_size": args.image_size, "sizes": args.sizes, "steps": args.steps, "seed": args.seed, **recipe, **model,
              "train_seconds": round(record["train_seconds"], 1), "loss_last_100": round(record["loss_last_100"], 4)}
    prompts = default_eval_prompts()
    for split in ("common", "rare"):
        ps = [p for p in prompts if split_of(p) == split]
        images = render(pipe, ps, samples=args.samples, seed=0)
        flat = [p for p in ps for _ in range(args.samples)]
        aligned = scorer.score(images.reshape(-1, *images.shape[2:]), flat).aligned
        cats = np.array([parse_prompt(p).category for p in flat])
        result[split] = round(float(aligned.mean()), 3)
        result[f"{split}_by_category"] = {c: round(float(aligned[cats == c].mean()), 3) for c in dict.fromkeys(cats)}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    line = json.dumps(result)
    print(line)
    if args.log:
        with args.log.open("a") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
