"""Does a scenes model read the relation word? Two probes that do not need clean sprites (issue 23).

1. The first denoising step's x0 prediction from pure noise (t = 999), averaged over 64 noise draws, for "a red
   circle {left of, right of, above, below} a blue square": the centres of its red and of its blue mass. A model that
   reads the relation moves them with the word; one that does not draws the same average layout for all four.
2. Relation by colour centres: coloured position prompts with two different colours (up to 48 per split, by CRC-32),
   8 noise draws each; among images where both colours cover >= 20 px, the share whose colour centres stand as the
   relation says (the dominant axis and its sign). Random layouts score below 0.5 (the axis must also match).

    python bench/scenes_relation_probe.py MODEL_DIR [MODEL_DIR ...]
"""

from __future__ import annotations

import sys
import zlib

import numpy as np
import torch

from find_rl.worlds.scenes import scorer
from find_rl.worlds.scenes.baseline import render
from find_rl.worlds.scenes.grammar import COLOUR_PATTERNS, COLOURS, all_prompts, parse_prompt
from find_rl.worlds.scenes.pipeline import ScenesPipeline
from find_rl.worlds.scenes.splits import split_of

PATTERN = dict(zip(COLOURS, COLOUR_PATTERNS))  # the world's own channel patterns, by colour name
RELATIONS = ("left of", "right of", "above", "below")


def colour_name(c) -> str:
    return c if isinstance(c, str) else COLOURS[c]


def centre(image: np.ndarray, colour: str, min_pixels: int = 0):
    """(x, y) centre of the pixels of exactly this colour's channel pattern (channel on when > 0); None if too few."""
    mask = np.all((image > 0) == np.array(PATTERN[colour], bool)[:, None, None], axis=0)
    if mask.sum() < max(1, min_pixels):
        return None
    yy, xx = np.nonzero(mask)
    return float(xx.mean()), float(yy.mean())


@torch.no_grad()
def first_step_layout(pipe: ScenesPipeline) -> None:
    noise = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for rel in RELATIONS:
        prompt = f"a red circle {rel} a blue square"
        x0 = pipe.denoise(noise, torch.tensor(999), pipe.encode_prompt([prompt] * 64)).mean(0).numpy()
        red, blue = (x0[0] - x0[2]).clip(0), (x0[2] - x0[0]).clip(0)
        xs = np.arange(32)

        def c(w):
            return (w.sum(0) * xs).sum() / w.sum(), (w.sum(1) * xs).sum() / w.sum()

        (rx, ry), (bx, by) = c(red), c(blue)
        print(f"  t=999 mean x0, {prompt:38s} red at ({rx:4.1f}, {ry:4.1f}), blue at ({bx:4.1f}, {by:4.1f})")


def relation_by_centres(pipe: ScenesPipeline, split: str, n_prompts: int = 48, samples: int = 8) -> None:
    prompts = []
    for p in all_prompts():
        parsed = parse_prompt(p)
        colours = [o.colour for o in parsed.instances]
        if parsed.category == "position" and split_of(p) == split and None not in colours and len(set(colours)) == 2:
            prompts.append(p)
    prompts = sorted(prompts, key=lambda p: zlib.crc32(p.encode()))[:n_prompts]
    images = render(pipe, prompts, samples=samples, seed=1)
    right = both = 0
    for p, imgs in zip(prompts, images):
        rel = next(r for r in RELATIONS if f" {r} " in p)
        a, b = (colour_name(o.colour) for o in parse_prompt(p).instances)
        for im in imgs:
            ca, cb = centre(im, a, 20), centre(im, b, 20)
            if ca is None or cb is None:
                continue
            dx, dy = ca[0] - cb[0], ca[1] - cb[1]
            horizontal = abs(dx) > abs(dy)
            right += {"left of": horizontal and dx < 0, "right of": horizontal and dx > 0,
                      "above": not horizontal and dy < 0, "below": not horizontal and dy > 0}[rel]
            both += 1
    aligned = scorer.score(images.reshape(-1, *images.shape[2:]), [p for p in prompts for _ in range(samples)]).aligned
    print(f"  {split:6s}: relation by colour centres {right}/{both} = {right / max(both, 1):.2f} (both colours in "
          f"{both / (len(prompts) * samples):.0%} of the images); scorer aligned {aligned.mean():.2f} "
          f"({len(prompts)} prompts x {samples})")


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    torch.set_num_threads(2)
    for folder in argv:
        pipe = ScenesPipeline.from_pretrained(folder)
        pipe.set_progress_bar_config(disable=True)
        print(f"{folder} ({type(pipe.text_encoder).__name__}, coord channels {pipe.config.coord_channels}, "
              f"timestep spacing {pipe.scheduler.config.timestep_spacing})")
        first_step_layout(pipe)
        for split in ("common", "rare"):
            relation_by_centres(pipe, split)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
