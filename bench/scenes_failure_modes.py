"""Why the frozen scenes model fails its common prompts: each failed image's first broken rule, per category.

Renders the common and rare prompts of the default evaluation set (``--samples`` noise draws each, seed 0, the
pipeline's sampler or ``--steps`` / ``--guidance``), scores them with the world's scorer and sorts every image of a
two-object category (two_object, position, color_attr) and of counting into the first rule it breaks, in this order:

- ``objects``: the detector finds another number of objects than the prompt names;
- ``unrecognised``: an object matches no shape template (a blob, merged sprites);
- ``unclean``: a speck or a smear;
- ``shape``: the right number of clean sprites, but the multiset of shapes is not the prompt's (one object drawn as
  another shape); the drawn sprites' own template IoUs are kept, to tell a crisp wrong shape from a smudged right one;
- ``colour``: the shapes are right but a named colour is not on its shape (binding);
- ``relation``: all of the above hold, only GenEval's position rule fails (``other`` for a prompt with no relation).

    python bench/scenes_failure_modes.py                       # the shipped model, its sampler
    python bench/scenes_failure_modes.py --steps 20 --guidance 1.25
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import numpy as np

RULES = ("objects", "unrecognised", "unclean", "shape", "colour", "relation", "other")


def first_broken_rule(prompt, detection) -> str:
    """The first rule of :data:`RULES` an unaligned image breaks (see the module docstring)."""
    from find_rl.worlds.scenes.geometry import SHAPES
    from find_rl.worlds.scenes.grammar import RELATIONS

    objects = detection.objects
    if len(objects) != len(prompt.instances):
        return "objects"
    if any(o.shape is None for o in objects):
        return "unrecognised"
    if not detection.clean:
        return "unclean"
    want = collections.Counter(SHAPES[w.shape] for w in prompt.instances)
    if collections.Counter(SHAPES[o.shape] for o in objects) != want:
        return "shape"
    coloured = collections.Counter((w.shape, w.colour) for w in prompt.instances if w.colour is not None)
    drawn = collections.Counter((o.shape, o.colour) for o in objects)
    if any(drawn[k] < n for k, n in coloured.items()):
        return "colour"
    return "relation" if prompt.relation in RELATIONS else "other"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=None, help="a scenes pipeline folder (default: the shipped model)")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the pipeline's)")
    ap.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the pipeline's)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import torch

    from find_rl.worlds.scenes import scorer
    from find_rl.worlds.scenes.baseline import render
    from find_rl.worlds.scenes.evaluation_set import default_eval_prompts
    from find_rl.worlds.scenes.geometry import SHAPES
    from find_rl.worlds.scenes.grammar import parse_prompt
    from find_rl.worlds.scenes.pipeline import ScenesPipeline
    from find_rl.worlds.scenes.plugin import ScenesWorld
    from find_rl.worlds.scenes.splits import split_of

    torch.set_num_threads(args.threads)
    pipe = ScenesPipeline.from_pretrained(args.model or ScenesWorld.model_dir)
    pipe.set_progress_bar_config(disable=True)
    out = {"model": str(args.model or "shipped"), "samples": args.samples, "steps": args.steps, "guidance": args.guidance}
    for split in ("common", "rare"):
        prompts = [p for p in default_eval_prompts() if split_of(p) == split]
        images = render(pipe, prompts, samples=args.samples, seed=0, num_inference_steps=args.steps,
                        guidance_scale=args.guidance)
        rules: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        swaps: collections.Counter = collections.Counter()
        aligned_all = []
        for prompt, imgs in zip(prompts, images):
            p = parse_prompt(prompt)
            s = scorer.score(imgs, [prompt] * len(imgs))
            aligned_all.append(s.aligned)
            for ok, det in zip(s.aligned, s.detections):
                rule = "aligned" if ok else first_broken_rule(p, det)
                rules[p.category][rule] += 1
                if rule == "shape":
                    want = collections.Counter(SHAPES[w.shape] for w in p.instances)
                    got = collections.Counter(SHAPES[o.shape] for o in det.objects)
                    crisp = all(max(o.ious) >= 0.95 for o in det.objects)
                    swaps[f"{'+'.join((want - got).elements())} drawn as {'+'.join((got - want).elements())}"
                          f"{'' if crisp else ' (smudged)'}"] += 1
        out[split] = round(float(np.concatenate(aligned_all).mean()), 3)
        out[f"{split}_by_category"] = {c: round(cnt["aligned"] / sum(cnt.values()), 3) for c, cnt in rules.items()}
        out[f"{split}_first_broken_rule"] = {
            c: {r: round(n / sum(cnt.values()), 3) for r, n in cnt.most_common()}
            for c, cnt in rules.items() if c in ("two_object", "position", "color_attr", "counting")}
        out[f"{split}_wrong_shapes"] = dict(swaps.most_common(8))
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
