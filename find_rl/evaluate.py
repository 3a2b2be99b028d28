"""Score the frozen model (``--policy base``) or a learned noise policy on fresh samples.

How to run::

    python -m find_rl.evaluate --policy base --samples 256 --json base.json
    python -m find_rl.evaluate --policy runs/find --samples 256

Per prompt: alignment (the detector's ``aligned`` rate) with a 95% Wilson interval, strict alignment (detector
IoU >= 0.8), diversity (mean pairwise L2 distance between that prompt's images, in [-1, 1] pixel units) and the
number of samples. Base and learned policies go through exactly the same code; only the noise differs.
No Ray is needed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

from find_rl.rewards import ShapesReward
from find_rl.sampler import DiffusionSampler, SamplerSettings
from find_rl.shapes.detector import DEFAULT_IOU, STRICT_IOU
from find_rl.shapes.world import all_prompts, is_common


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))


def diversity(images: np.ndarray) -> float:
    """Mean pairwise L2 distance between the images of one prompt (``(N, ...)``, N >= 2)."""
    x = torch.as_tensor(images, dtype=torch.float64).flatten(1)
    n = len(x)
    if n < 2:
        return 0.0
    d = torch.cdist(x, x)
    return float(d.sum() / (n * (n - 1)))


def _rare(prompt: str) -> bool | None:
    try:
        return not is_common(prompt)
    except ValueError:
        return None


def evaluate_distributions(
    *,
    model: str = "shapes",
    prompts: list[str],
    mean: torch.Tensor | None = None,
    std: torch.Tensor | None = None,
    samples: int = 256,
    seed: int = 0,
    settings: SamplerSettings | None = None,
    sampler: DiffusionSampler | None = None,
    chunk: int = 576,
    return_images: int = 0,
) -> dict[str, dict]:
    """Render ``samples`` images per prompt from N(mean_i, std_i^2) (N(0, I) when ``mean`` is None) and score them.

    Returns ``{prompt: {alignment, strict_alignment, ci_low, ci_high, diversity, samples, rare}}``; with
    ``return_images=k`` each entry also carries its first k images under ``"images"``.
    """
    if samples < 2:
        raise ValueError(f"samples must be >= 2, got {samples}")
    sampler = sampler or DiffusionSampler.from_pretrained(model, settings)
    shape = sampler.latent_shape
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn((len(prompts), samples, *shape), generator=gen)
    if mean is not None:
        noise = mean.reshape(len(prompts), 1, *shape) + std.reshape(len(prompts), 1, *shape) * noise
    flat_prompts = [p for p in prompts for _ in range(samples)]
    flat_noise = noise.reshape(-1, *shape)
    images = np.concatenate([sampler.sample(flat_noise[i : i + chunk], flat_prompts[i : i + chunk]).images
                             for i in range(0, len(flat_prompts), chunk)])
    scored = ShapesReward(min_iou=DEFAULT_IOU).score(images, flat_prompts)  # one detection pass serves both settings
    lenient = scored["aligned"]
    strict = lenient & (scored["shape_iou"] >= STRICT_IOU)
    out = {}
    for i, p in enumerate(prompts):
        sl = slice(i * samples, (i + 1) * samples)
        k = int(lenient[sl].sum())
        lo, hi = wilson_interval(k, samples)
        out[p] = {"alignment": k / samples, "strict_alignment": float(strict[sl].mean()), "ci_low": lo, "ci_high": hi,
                  "diversity": diversity(images[sl]), "samples": samples, "rare": _rare(p)}
        if return_images:
            out[p]["images"] = images[sl][:return_images]
    return out


def evaluate_base(*, model: str = "shapes", prompts: list[str] | None = None, samples: int = 256, seed: int = 0,
                  settings: SamplerSettings | None = None) -> dict:
    settings = settings or SamplerSettings()
    prompts = prompts or all_prompts()
    res = evaluate_distributions(model=model, prompts=prompts, samples=samples, seed=seed, settings=settings)
    return {"policy": "base", "model": model, "samples": samples, "seed": seed, "sampler": settings.to_dict(), "prompts": res}


def evaluate_policy(policy_dir: str, *, samples: int = 256, seed: int = 0, prompts: list[str] | None = None,
                    model: str | None = None, device: str | None = None) -> dict:
    from find_rl.export import load_policy

    pol = load_policy(policy_dir)
    settings = SamplerSettings(**(dict(pol.sampler) | ({"device": device} if device else {})))
    prompts = prompts or pol.prompts
    idx = [pol.index(p) for p in prompts]
    res = evaluate_distributions(model=model or pol.model, prompts=prompts, mean=pol.mean[idx], std=pol.std[idx], samples=samples,
                                 seed=seed, settings=settings)
    return {"policy": str(policy_dir), "model": model or pol.model, "samples": samples, "seed": seed, "sampler": settings.to_dict(),
            "prompts": res}


def format_table(result: dict) -> str:
    lines = [f"policy {result['policy']}  model {result['model']}  samples/prompt {result['samples']}  seed {result['seed']}",
             f"{'prompt':<20} {'kind':<7} {'alignment [95% CI]':<24} {'strict':>7} {'diversity':>10} {'n':>5}"]
    groups: dict[str, list[float]] = {}
    for p, r in result["prompts"].items():
        kind = {True: "rare", False: "common", None: "-"}[r["rare"]]
        groups.setdefault(kind, []).append(r["alignment"])
        ci = f"{r['alignment']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
        lines.append(f"{p:<20} {kind:<7} {ci:<24} {r['strict_alignment']:>7.3f} {r['diversity']:>10.2f} {r['samples']:>5}")
    for kind, vals in groups.items():
        lines.append(f"mean over {kind} prompts: {np.mean(vals):.3f} ({len(vals)} prompts)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m find_rl.evaluate", description="Score the frozen model or a learned noise policy.")
    p.add_argument("--policy", default="base", help="'base' (N(0, I) noise) or a folder written by find_rl.train")
    p.add_argument("--model", default=None, help="model: 'shapes' (default for base), a pipeline folder or a hub id; overrides a policy's")
    p.add_argument("--device", default=None, help="device to render on (default: cpu for base, the policy's otherwise)")
    p.add_argument("--prompts", nargs="+", default=None, help="prompts to score (default: all shapes prompts / the policy's)")
    p.add_argument("--samples", type=int, default=256, help="samples per prompt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        if args.json is not None and args.json.parent and not args.json.parent.exists():
            raise ValueError(f"--json folder {args.json.parent} does not exist; create it first")
        if args.policy == "base":
            result = evaluate_base(model=args.model or "shapes", prompts=args.prompts, samples=args.samples, seed=args.seed,
                                   settings=SamplerSettings(device=args.device or "cpu"))
        else:
            result = evaluate_policy(args.policy, samples=args.samples, seed=args.seed, prompts=args.prompts, model=args.model,
                                     device=args.device)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
