"""The frozen scenes model's baseline: aligned and strict rates per split x category under N(0, I) noise.

``default_eval_prompts()`` (:mod:`find_rl.worlds.scenes.evaluation_set`) is the fixed, stratified evaluation set:
for every (split, category) stratum of ``splits.prompts_by_split()``, up to ``PER_STRATUM`` prompts chosen by the
CRC-32 of their text (deterministic, spread over the stratum), in ``all_prompts`` order. ``evaluate`` draws the
initial noise of prompt ``i``'s ``k``-th sample from one ``torch.Generator`` seeded with ``seed`` (a fixed tensor
of shape ``(n_prompts, samples, 3, 32, 32)``), renders with the world's sampler (``core.settings.WORLD_SAMPLER``;
``--scheduler ddim --steps 10 --guidance 1`` is the sampler the model trained for) and scores with ``scorer.score``. ``render`` renders with the pipeline as it is (its scheduler,
its call's defaults: DDIM, 10 steps, no guidance), as the recipe probes of ``bench/`` do.

    python -m find_rl.worlds.scenes.baseline --model find_rl/worlds/scenes/model --samples 16 --threads 2

Rates pool the images of a stratum; the 95% Wilson interval treats them as independent (images of one prompt are
not quite: read the interval as a lower bound on the uncertainty).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from find_rl.core.settings import WORLD_SAMPLER, SamplerSettings
from find_rl.worlds.scenes import scorer
from find_rl.worlds.scenes.evaluation_set import PER_STRATUM, default_eval_prompts
from find_rl.worlds.scenes.grammar import CATEGORIES, parse_prompt
from find_rl.worlds.scenes.splits import SPLITS

DEFAULT_SAMPLES = 16


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of ``k`` successes in ``n`` trials."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def render(pipe, prompts: list[str], *, samples: int, seed: int, num_inference_steps: int | None = None,
           guidance_scale: float | None = None, guidance_rescale: float | None = None, guidance_stop: float | None = None,
           batch_size: int = 256) -> np.ndarray:
    """Images ``(n_prompts, samples, 3, H, W)`` of every prompt under the fixed noise of ``seed`` (None: the
    pipeline's default for that argument)."""
    noise = torch.randn((len(prompts), samples, *pipe.latent_shape), generator=torch.Generator().manual_seed(seed))
    flat_prompts = [p for p in prompts for _ in range(samples)]
    flat_noise = noise.reshape(-1, *pipe.latent_shape)
    kwargs = {k: v for k, v in (("num_inference_steps", num_inference_steps), ("guidance_scale", guidance_scale),
                                ("guidance_rescale", guidance_rescale), ("guidance_stop", guidance_stop)) if v is not None}
    out = [pipe(flat_prompts[i : i + batch_size], latents=flat_noise[i : i + batch_size], eta=0.0, **kwargs).images
           for i in range(0, len(flat_prompts), batch_size)]
    return np.concatenate(out).reshape(len(prompts), samples, *pipe.latent_shape)


def evaluate(pipe, prompts: list[str] | None = None, *, samples: int = DEFAULT_SAMPLES, seed: int = 0,
             settings: SamplerSettings | None = None) -> dict:
    """Aligned / strict rates per split x category (and per split, per category, per prompt) of ``pipe`` under the
    sampler ``settings`` (choices left at None: the scenes world's own sampler, ``SamplerSettings.resolved``, as every
    command renders it; the scheduler is swapped on ``pipe`` in place as ``DiffusionSampler`` does)."""
    from find_rl.diffusion.sampler import DiffusionSampler

    settings = (settings or SamplerSettings()).resolved("scenes")
    DiffusionSampler(pipe, settings)  # swaps the scheduler the settings name (DDIM, UniPC) into pipe
    prompts = default_eval_prompts() if prompts is None else list(prompts)
    sampler = {k: getattr(settings, k) for k in ("num_inference_steps", "guidance_scale", "guidance_rescale", "guidance_stop")}
    t0 = time.perf_counter()
    images = render(pipe, prompts, samples=samples, seed=seed, **sampler)
    render_s = time.perf_counter() - t0
    flat = [p for p in prompts for _ in range(samples)]
    s = scorer.score(images.reshape(-1, *images.shape[2:]), flat)
    aligned, strict = s.aligned.reshape(len(prompts), samples), s.strict.reshape(len(prompts), samples)
    from find_rl.worlds.scenes.splits import split_of

    split = [split_of(p) for p in prompts]
    cat = [parse_prompt(p).category for p in prompts]

    def cell(rows: list[int]) -> dict:
        a, st = aligned[rows], strict[rows]
        k, n = int(a.sum()), int(a.size)
        lo, hi = wilson(k, n)
        return {"prompts": len(rows), "images": n, "aligned": k / n, "ci_low": lo, "ci_high": hi,
                "strict": float(st.mean()), "reward": float(s.reward.reshape(len(prompts), samples)[rows].mean())}

    table = {}
    for sp in SPLITS:
        table[sp] = {}
        for c in CATEGORIES:
            rows = [i for i in range(len(prompts)) if split[i] == sp and cat[i] == c]
            if rows:
                table[sp][c] = cell(rows)
        rows = [i for i in range(len(prompts)) if split[i] == sp]
        if rows:
            table[sp]["all"] = cell(rows)
            table[sp]["category_mean"] = float(np.mean([v["aligned"] for k, v in table[sp].items() if k in CATEGORIES]))
    return {
        "sampler": {"scheduler": settings.scheduler, "eta": 0.0,
                    "timestep_spacing": pipe.scheduler.config.get("timestep_spacing", "leading"), **sampler},
        "noise": "N(0, I)", "seed": seed, "samples": samples, "n_prompts": len(prompts),
        "eval_set": f"default_eval_prompts(per_stratum={PER_STRATUM})" if prompts == default_eval_prompts() else "custom",
        "render_seconds": render_s, "images_per_second": len(flat) / render_s,
        "table": table,
        "prompts": {p: {"split": split[i], "category": cat[i], "aligned": float(aligned[i].mean()),
                        "strict": float(strict[i].mean())} for i, p in enumerate(prompts)},
    }


def markdown_table(result: dict) -> str:
    """Split x category aligned rates ("aligned [95% CI] / strict"), one row per split."""
    head = "| split | " + " | ".join(CATEGORIES) + " | all (pooled) | category mean |"
    rows = [head, "|" + "---|" * (len(CATEGORIES) + 3)]
    for sp, cells in result["table"].items():
        if not cells:
            continue
        out = []
        for c in (*CATEGORIES, "all"):
            v = cells.get(c)
            out.append("–" if v is None else f"{v['aligned']:.2f} [{v['ci_low']:.2f}, {v['ci_high']:.2f}] / {v['strict']:.2f} (n={v['prompts']})")
        rows.append(f"| {sp} | " + " | ".join(out) + f" | {cells['category_mean']:.3f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=Path(__file__).with_name("model"))
    ap.add_argument("--samples", type=int, default=DEFAULT_SAMPLES)
    ap.add_argument("--seed", type=int, default=0)
    w = WORLD_SAMPLER["scenes"]
    ap.add_argument("--scheduler", choices=("ddim", "unipc"), default=None,
                    help=f"the sampler (default: the world's, {w['scheduler']}; ddim: the sampler the model trained for)")
    ap.add_argument("--steps", type=int, default=None, help=f"sampling steps (default: the world's, {w['num_inference_steps']})")
    ap.add_argument("--guidance", type=float, default=None,
                    help=f"classifier-free guidance scale (default: the world's, {w['guidance_scale']})")
    ap.add_argument("--guidance-rescale", type=float, default=None,
                    help=f"guidance rescale phi in [0, 1] (default: the world's, {w['guidance_rescale']})")
    ap.add_argument("--guidance-stop", type=float, default=None,
                    help=f"guide only the first int(stop x steps) steps (default: the world's, {w['guidance_stop']})")
    ap.add_argument("--timestep-spacing", choices=("leading", "trailing", "linspace"), default=None,
                    help="the DDIM sampler's timestep spacing (default: the model's scheduler config)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None, help="write the result here")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    from find_rl.worlds.scenes.pipeline import ScenesPipeline

    pipe = ScenesPipeline.from_pretrained(a.model)
    pipe.set_progress_bar_config(disable=True)
    if a.timestep_spacing:
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, timestep_spacing=a.timestep_spacing)
    try:
        settings = SamplerSettings(scheduler=a.scheduler, num_inference_steps=a.steps, guidance_scale=a.guidance,
                                   guidance_rescale=a.guidance_rescale, guidance_stop=a.guidance_stop)
        r = evaluate(pipe, samples=a.samples, seed=a.seed, settings=settings)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(markdown_table(r))
    print(f"{r['images_per_second']:.1f} images/s ({a.threads} threads)")
    if a.json:
        a.json.write_text(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
