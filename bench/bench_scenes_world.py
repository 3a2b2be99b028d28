"""Measure the scenes world (find_rl.worlds.scenes): prompt and split counts, the scorer on ground truth, noise and
hard negatives, and the speed of the renderer, the training-data generator and the scorer. Pure numpy.

How to run::

    OMP_NUM_THREADS=1 python bench/bench_scenes_world.py --per-category 2000 --train 100000 --seed 0

Results to expect: ground truth 100% aligned and strict in every category, noise 0%, every hard negative
rejected; the figures of find_rl/worlds/scenes/README.md.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np

from find_rl.worlds.scenes import splits
from find_rl.worlds.scenes.adversarial import adversarial_cases
from find_rl.worlds.scenes.grammar import CATEGORIES, all_prompts, parse_prompt
from find_rl.worlds.scenes.render import render_scenes, sample_scenes, sample_training_batch
from find_rl.worlds.scenes.scorer import accuracy_by_category, score


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-category", type=int, default=2000, help="ground-truth scenes per GenEval category")
    parser.add_argument("--train", type=int, default=100_000, help="training images to generate for the speed figure")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)

    prompts = all_prompts()
    table = Counter((parse_prompt(p).category, splits.split_of(p)) for p in prompts)
    print(f"{len(prompts)} prompts\n| category | " + " | ".join(splits.SPLITS) + " | total |")
    for cat in (*CATEGORIES, None):
        row = [sum(v for (c, s), v in table.items() if s == split and cat in (None, c)) for split in splits.SPLITS]
        print(f"| {cat or 'total'} | " + " | ".join(map(str, row)) + f" | {sum(row)} |")

    by_cat = {c: [t for t in prompts if parse_prompt(t).category == c] for c in CATEGORIES}
    gt_prompts = [by_cat[c][i] for c in CATEGORIES for i in rng.choice(len(by_cat[c]), args.per_category)]
    gt_images = render_scenes(sample_scenes(gt_prompts, rng))
    result, dt = _timed(score, gt_images, gt_prompts)
    print(f"\nground truth, {args.per_category} scenes per category (all splits), "
          f"scored at {len(gt_prompts) / dt:.0f} images/s")
    for name, flags in (("aligned", result.aligned), ("strict", result.strict)):
        acc = accuracy_by_category(gt_prompts, flags)
        print(f"  {name:8s} " + "  ".join(f"{k} {v:.4f}" for k, v in acc.items()))
    print(f"  reward 1 on every aligned image: {bool(np.all(result.reward[result.aligned] == 1.0))}")

    noise = {"uniform": rng.uniform(-1, 1, size=(2000, 3, 32, 32)),
             "gaussian": np.clip(rng.normal(-0.5, 0.6, size=(2000, 3, 32, 32)), -1, 1)}
    for name, images in noise.items():
        r = score(images.astype(np.float32), gt_prompts[:: max(1, len(gt_prompts) // 2000)][:2000])
        print(f"{name} noise: aligned {r.aligned.mean():.4f}, max reward {r.reward.max():.3f}")

    cases = adversarial_cases()
    r = score(np.stack([c.image for c in cases]), [c.prompt for c in cases])
    print(f"\nhard negatives rejected: {int((~r.aligned).sum())} / {len(cases)}")
    for c, a, rw in zip(cases, r.aligned, r.reward):
        print(f"  {'FAIL ' if a else ''}{c.name}: {c.prompt!r} reward {rw:.3f}")

    sample_training_batch(1000, rng)  # warm the prompt tables
    (images, train_prompts), dt = _timed(sample_training_batch, args.train, rng)
    print(f"\ntraining data: {args.train} images in {dt:.2f} s = {args.train / dt:.0f} images/s")
    scenes, dt_place = _timed(sample_scenes, train_prompts, rng, training=True)
    _, dt_render = _timed(render_scenes, scenes)
    print(f"  of which placement {args.train / dt_place:.0f} scenes/s, rasterisation {args.train / dt_render:.0f} images/s")
    shares = Counter(parse_prompt(p).category for p in train_prompts)
    print("  category shares: " + ", ".join(f"{c} {shares[c] / len(train_prompts):.3f}" for c in CATEGORIES))
    rare = np.mean([splits.split_of(p) == "rare" for p in train_prompts])
    print(f"  share of rare prompts {rare:.3f}, policy {np.mean([splits.split_of(p) == 'policy' for p in train_prompts]):.3f}")


if __name__ == "__main__":
    main()
