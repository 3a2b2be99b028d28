"""The mended shapes detector against the lenient one it replaced, on the same images: the world's own renders,
the frozen model's samples and a learned policy's samples.

How to run (~1 min on 2 cores; the lenient detector is read from git at ``--old-rev``)::

    python bench/detector_calibration.py --policy runs/find0 --old-rev 525fe29

Prints, per source and prompt, the alignment under each detector and which of the mended detector's checks
(step numbers of ``find_rl/worlds/shapes/detector.py``) rejected the images the lenient one accepted; and the world's own
images' aspect, stray mass and per-shape margin quantiles that the thresholds were set from.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch


def _old_detector(rev: str):
    src = subprocess.run(["git", "show", f"{rev}:find_rl/worlds/shapes/detector.py"], capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "lenient_detector.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("lenient_detector", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["lenient_detector"] = mod
    spec.loader.exec_module(mod)
    return mod


def _reasons(images: np.ndarray, prompt: str) -> str:
    """Counts of the mended detector's failed checks among these images (an image can fail several)."""
    from find_rl.worlds.shapes import detector as D
    from find_rl.worlds.shapes.world import parse_prompt

    s = parse_prompt(prompt).shape
    counts = {"aspect (5)": 0, "stray (4)": 0, "margin/IoU (7)": 0, "corners (8)": 0}
    for d in D.detect_batch(images):
        counts["aspect (5)"] += d.aspect > D.MAX_ASPECT
        counts["stray (4)"] += d.stray > D.MAX_STRAY
        others = max(v for k, v in enumerate(d.ious) if k != s)
        counts["margin/IoU (7)"] += d.ious[s] < D.DEFAULT_IOU or d.ious[s] - others < D.MIN_MARGIN[s]
        counts["corners (8)"] += s == 0 and d.corner_fill > D.MAX_CORNER_FILL
    return ", ".join(f"{k} {v}" for k, v in counts.items() if v)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--policy", default=None, help="a run folder (find_rl.train) whose fresh samples to score too")
    p.add_argument("--old-rev", default="525fe29", help="git revision holding the lenient detector")
    p.add_argument("--samples", type=int, default=512, help="frozen-model samples per prompt (a policy: half)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from find_rl.policies.export import load_policy
    from find_rl.diffusion.sampler import DiffusionSampler, SamplerSettings
    from find_rl.worlds.shapes import detector as new
    from find_rl.worlds.shapes.world import SHAPES, all_prompts, make_dataset

    old = _old_detector(args.old_rev)
    gt, combos = make_dataset(9000, seed=1, balanced=True)
    dets = new.detect_batch(gt)
    q = lambda a: " ".join(f"{v:.3f}" for v in np.quantile(a, [0, 0.001, 0.01, 0.5, 1]))  # noqa: E731
    print("the world's own images (9,000, balanced): quantiles 0 / 0.1% / 1% / 50% / 100%")
    for s, name in enumerate(SHAPES):
        ds = [d for d, c in zip(dets, combos) if c // 3 == s]
        margin = [d.ious[s] - max(v for k, v in enumerate(d.ious) if k != s) for d in ds]
        print(f"  {name:<8} margin {q(margin)} | aspect {q([d.aspect for d in ds])} | stray max {max(d.stray for d in ds):.3f}")
    prompts = [all_prompts()[k] for k in combos]
    for iou in (new.DEFAULT_IOU, new.STRICT_IOU):
        print(f"  accuracy at IoU {iou}: lenient {old.score_images(gt, prompts, min_iou=iou)['aligned'].mean():.4f}, "
              f"mended {new.score_images(gt, prompts, min_iou=iou)['aligned'].mean():.4f}")

    sampler = DiffusionSampler.from_pretrained("shapes", SamplerSettings())
    gen = torch.Generator().manual_seed(7)
    sets = {}
    for prompt in all_prompts():
        z = torch.randn((args.samples, *sampler.latent_shape), generator=gen)
        sets[f"frozen: {prompt}"] = (prompt, sampler.sample(z, [prompt] * args.samples).images)
    if args.policy:
        pol = load_policy(args.policy)
        n = args.samples // 2
        for i, prompt in enumerate(pol.prompts):
            z = pol.transform([i], torch.randn((1, n, *sampler.latent_shape), generator=gen)).reshape(n, *sampler.latent_shape)
            sets[f"policy: {prompt}"] = (prompt, sampler.sample(z, [prompt] * n).images)
    print("\n| images | lenient | mended | mended strict | the mended checks that failed |\n|---|---|---|---|---|")
    for name, (prompt, imgs) in sets.items():
        lenient = old.score_images(imgs, [prompt] * len(imgs))["aligned"].mean()
        r = new.score_images(imgs, [prompt] * len(imgs))
        strict = (r["aligned"] & (r["shape_iou"] >= new.STRICT_IOU)).mean()
        print(f"| {name} | {lenient:.3f} | {r['aligned'].mean():.3f} | {strict:.3f} | {_reasons(imgs, prompt)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
