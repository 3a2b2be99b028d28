"""The frozen scenes model under other samplers, side by side: alignment per split and category against the cost of an image.

Every sampler renders the same default evaluation set (``baseline.default_eval_prompts()``, 211 prompts) from the
same noise (``--samples`` draws per prompt, ``--seed``) with the same shipped weights, and is scored by the world's
scorer (``baseline.evaluate``). Printed per sampler: UNet evaluations per image, images per second and the time
ratio to the first sampler (measured in this run, one after the other), the aligned rate of the common and rare
prompts with 95% Wilson intervals, and the common prompts per category. A sampler is a spec
``SCHEDULER:STEPS[:GUIDANCE[:RESCALE[:STOP]]]`` (``ddim:10`` is the pipeline as shipped; ``unipc:15:3:0.7:0.3``:
UniPC, 15 steps, guidance 3 on the first ``int(0.3 x 15)`` = 4 steps, rescaled by 0.7).

    python bench/scenes_sampler_frontier.py                 # the default list, ~10 minutes on 2 cores
    python bench/scenes_sampler_frontier.py --samplers ddim:10 unipc:20:3:0.7:0.3 --samples 32 --seed 1

Run it alone (a second torch job on the same cores distorts the timings).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

DEFAULT_SAMPLERS = ("ddim:10", "unipc:10", "ddim:10:1.5", "unipc:20", "unipc:10:3:0.7:0.3", "unipc:15:3:0.7:0.3",
                    "unipc:20:3:0.7:0.3")


def parse_spec(spec: str) -> dict:
    """``SCHEDULER:STEPS[:GUIDANCE[:RESCALE[:STOP]]]`` -> the sampler's arguments (a one-line ValueError otherwise)."""
    parts = spec.split(":")
    if parts[0] not in ("ddim", "unipc") or not 2 <= len(parts) <= 5:
        raise ValueError(f"sampler {spec!r}: write SCHEDULER:STEPS[:GUIDANCE[:RESCALE[:STOP]]] with SCHEDULER ddim or unipc")
    try:
        steps, *rest = int(parts[1]), *map(float, parts[2:])
    except ValueError:
        raise ValueError(f"sampler {spec!r}: STEPS is a whole number, GUIDANCE, RESCALE and STOP are numbers") from None
    guidance, rescale, stop = (*rest, *(1.0, 0.0, 1.0)[len(rest):])
    return {"scheduler": parts[0], "num_inference_steps": steps, "guidance_scale": guidance, "guidance_rescale": rescale,
            "guidance_stop": stop}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samplers", nargs="+", default=list(DEFAULT_SAMPLERS))
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None, help="write every sampler's result here")
    args = ap.parse_args(argv)
    try:
        specs = [parse_spec(s) for s in args.samplers]
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    import torch

    from find_rl.core.settings import SamplerSettings
    from find_rl.diffusion.pixel_loop import guided_steps
    from find_rl.worlds.scenes.baseline import evaluate
    from find_rl.worlds.scenes.grammar import CATEGORIES
    from find_rl.worlds.scenes.pipeline import ScenesPipeline

    torch.set_num_threads(args.threads)
    pipe = ScenesPipeline.from_pretrained(Path(__file__).resolve().parents[1] / "find_rl/worlds/scenes/model")
    pipe.set_progress_bar_config(disable=True)
    print(f"# {platform.machine()}, torch {torch.__version__}, {args.threads} threads; {args.samples} draws x 211 prompts, "
          f"noise seed {args.seed}")
    head = ["sampler", "UNet evals", "images/s", "time ratio", "common", "rare", *(f"common {c}" for c in CATEGORIES)]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    results, first_rate = {}, None
    for spec, s in zip(args.samplers, specs):
        r = evaluate(pipe, samples=args.samples, seed=args.seed, settings=SamplerSettings(**s))  # swaps the scheduler in
        evals = s["num_inference_steps"] + guided_steps(s["num_inference_steps"], s["guidance_scale"], s["guidance_stop"])
        rate = r["images_per_second"]
        first_rate = first_rate or rate
        t = r["table"]

        def cell(v):
            return f"{v['aligned']:.3f} [{v['ci_low']:.2f}, {v['ci_high']:.2f}]"

        row = [spec, str(evals), f"{rate:.1f}", f"{first_rate / rate:.2f}x", cell(t["common"]["all"]), cell(t["rare"]["all"]),
               *(f"{t['common'][c]['aligned']:.2f}" if c in t["common"] else "–" for c in CATEGORIES)]
        print("| " + " | ".join(row) + " |", flush=True)
        results[spec] = {"sampler": r["sampler"], "unet_evals_per_image": evals, "table": t, "prompts": r["prompts"],
                         "images_per_second": rate}
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
