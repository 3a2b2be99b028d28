"""What the scenes world's training rewards pay for what the frozen model draws: the frozen model's images of a prompt,
grouped by what the detector sees (each object's colour / shape, "blob" for an unrecognised one, "unclean" for a
speck or smear), with each group's count and the reward it earns under ``--reward scenes`` (the shaped reward: 1 when
aligned, else ``UNALIGNED_SHARE`` x the clause credit) and ``--reward scenes-binary`` (1 or 0).

A group the shaped reward pays more than the prompt's expected reward, which every image of it earns alike, is a
plateau a policy can walk onto and never leave: once every draw earns the same, the normalised advantage is 0
(``bench/RESULTS.md``, "Partial credit's plateau").

    python bench/scenes_reward_ranks.py "a blue circle"                 # 256 draws, noise seed 0
    python bench/scenes_reward_ranks.py "two cyan triangles" --samples 512 --seed 1
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import numpy as np


def outcome(detection) -> str:
    """``colour/shape`` of each detected object joined by " + " ("nothing" for an empty image), " unclean" appended
    when the image has a speck or smear."""
    from find_rl.worlds.scenes.geometry import SHAPES
    from find_rl.worlds.scenes.grammar import COLOURS

    objects = [f"{COLOURS[o.colour] if o.colour is not None else 'impure'}/{SHAPES[o.shape] if o.shape is not None else 'blob'}"
               for o in detection.objects]
    return (" + ".join(objects) or "nothing") + ("" if detection.clean else " unclean")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("prompt")
    ap.add_argument("--model", type=Path, default=None, help="a scenes pipeline folder (default: the shipped model)")
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0, help="noise seed")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import torch

    from find_rl.rewards.registry import make_reward
    from find_rl.worlds.scenes import scorer
    from find_rl.worlds.scenes.baseline import render
    from find_rl.worlds.scenes.grammar import parse_prompt
    from find_rl.worlds.scenes.pipeline import ScenesPipeline
    from find_rl.worlds.scenes.plugin import ScenesWorld

    parse_prompt(args.prompt)  # one-line error for a prompt the world cannot parse
    torch.set_num_threads(args.threads)
    pipe = ScenesPipeline.from_pretrained(args.model or ScenesWorld.model_dir)
    pipe.set_progress_bar_config(disable=True)
    images = render(pipe, [args.prompt], samples=args.samples, seed=args.seed)[0]
    prompts = [args.prompt] * len(images)
    detections = scorer.score(images, prompts).detections
    shaped, binary = make_reward("scenes")(images, prompts), make_reward("scenes-binary")(images, prompts)
    groups: dict[str, list[int]] = collections.defaultdict(list)
    for i, d in enumerate(detections):
        groups[outcome(d)].append(i)
    rows = sorted(groups.items(), key=lambda kv: -len(kv[1]))
    out = {"prompt": args.prompt, "samples": args.samples, "seed": args.seed,
           "expected_reward": {"scenes": round(float(shaped.mean()), 3), "scenes-binary": round(float(binary.mean()), 3)},
           "groups": [{"outcome": k, "count": len(ix), "scenes": round(float(shaped[ix].mean()), 3),
                       "scenes-binary": round(float(binary[ix].mean()), 3)} for k, ix in rows]}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
