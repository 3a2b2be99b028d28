"""Score the frozen model (``--policy base``) or a learned noise policy on fresh samples.

How to run::

    python -m find_rl.evaluate --policy base --samples 256 --json base.json
    python -m find_rl.evaluate --policy runs/find --samples 256
    python -m find_rl.evaluate --methods base,best-of-16,cem,ddpo,find --out runs/compare   # FIND vs baselines (find_rl.compare)

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
from find_rl.sampler import DiffusionSampler, SamplerSettings, check_device
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
    return score_image_sets({p: images[i * samples : (i + 1) * samples] for i, p in enumerate(prompts)},
                            return_images=return_images)


def score_image_sets(images: dict[str, np.ndarray], *, return_images: int = 0) -> dict[str, dict]:
    """Score ``{prompt: (N, 3, H, W) images}`` with the detector: the per-prompt entries of
    :func:`evaluate_distributions` (shared by every method of :mod:`find_rl.compare`)."""
    prompts = list(images)
    flat_prompts = [p for p in prompts for _ in range(len(images[p]))]
    scored = ShapesReward(min_iou=DEFAULT_IOU).score(np.concatenate([images[p] for p in prompts]), flat_prompts)
    lenient = scored["aligned"]  # one detection pass serves both settings
    strict = lenient & (scored["shape_iou"] >= STRICT_IOU)
    out, start = {}, 0
    for p in prompts:
        n = len(images[p])
        sl = slice(start, start + n)
        start += n
        k = int(lenient[sl].sum())
        lo, hi = wilson_interval(k, n)
        out[p] = {"alignment": k / n, "strict_alignment": float(strict[sl].mean()), "ci_low": lo, "ci_high": hi,
                  "diversity": diversity(images[p]), "samples": n, "rare": _rare(p)}
        if return_images:
            out[p]["images"] = images[p][:return_images]
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
    p.add_argument("--methods", default=None,
                   help="compare methods instead (find_rl.compare): e.g. base,best-of-16,cem,ddpo,find,find-nocal,find-noclip,"
                        "find-clamp,find-paper,amortized,amortized-all; needs --out")
    p.add_argument("--out", type=Path, default=None, help="with --methods: the report folder (results.json, report.md, plots)")
    p.add_argument("--seeds", default="0,1,2", help="with --methods: comma-separated seeds")
    p.add_argument("--iterations", type=int, default=80, help="with --methods: training iterations of every trained method")
    p.add_argument("--samples-per-prompt", type=int, default=32, help="with --methods: reward evaluations per prompt per iteration")
    p.add_argument("--held-out", nargs="+", default=None, help="with --methods amortized: prompts never trained on")
    p.add_argument("--ddpo-workers", type=int, default=2, help="with --methods ddpo: Ray Train data-parallel workers")
    p.add_argument("--amortized-hidden", type=int, default=64, help="with --methods amortized[-all]: hidden units of the MLP path")
    p.add_argument("--ddpo-lr", type=float, default=1e-3, help="with --methods ddpo: learning rate of the fine-tuned denoiser")
    p.add_argument("--model", default=None, help="model: 'shapes' (default for base), a pipeline folder or a hub id; overrides a policy's")
    p.add_argument("--device", default=None, help="device to render on (default: cpu for base, the policy's otherwise; "
                   "with --methods: where every method trains and renders, default cpu)")
    p.add_argument("--prompts", nargs="+", default=None, help="prompts to score (default: all shapes prompts / the policy's)")
    p.add_argument("--samples", type=int, default=256, help="samples per prompt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = p.parse_args(argv)
    if args.threads < 1:
        print(f"error: --threads must be >= 1, got {args.threads}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    if args.methods is not None:
        return compare_main(args)
    try:
        if args.samples < 2:
            raise ValueError(f"--samples must be >= 2 (diversity compares pairs of images), got {args.samples}")
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


def compare_main(args: argparse.Namespace) -> int:
    from find_rl.compare import DEFAULT_HELD_OUT, CompareSettings, parse_methods, run_comparison
    from find_rl.shapes.world import parse_prompt, rare_prompts

    try:
        methods = parse_methods(args.methods)
        if args.out is None:
            raise ValueError("--methods needs --out DIR (the report folder)")
        try:
            seeds = [int(v) for v in args.seeds.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
        if not seeds:
            raise ValueError(f"--seeds names no seed, got {args.seeds!r}; write e.g. 0,1,2")
        for flag, value, low in (("--samples", args.samples, 2), ("--iterations", args.iterations, 1),
                                 ("--samples-per-prompt", args.samples_per_prompt, 2), ("--ddpo-workers", args.ddpo_workers, 1),
                                 ("--amortized-hidden", args.amortized_hidden, 0)):
            if value < low:
                raise ValueError(f"{flag} must be >= {low}, got {value}")
        if not (math.isfinite(args.ddpo_lr) and args.ddpo_lr > 0):
            raise ValueError(f"--ddpo-lr must be a finite number > 0, got {args.ddpo_lr}")
        prompts = args.prompts or rare_prompts()
        held_out = args.held_out or list(DEFAULT_HELD_OUT)
        for p in prompts + held_out:
            parse_prompt(p)
        if args.samples_per_prompt % args.ddpo_workers and "ddpo" in methods:
            raise ValueError(f"--samples-per-prompt {args.samples_per_prompt} must divide evenly over --ddpo-workers {args.ddpo_workers}")
        if args.device:
            check_device(args.device)
        if args.out.exists() and not args.out.is_dir():
            raise ValueError(f"--out {args.out} is a file; choose a folder")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cs = CompareSettings(methods=methods, out=args.out, prompts=prompts, seeds=seeds, samples=args.samples, iterations=args.iterations,
                         samples_per_prompt=args.samples_per_prompt, held_out=held_out, ddpo_workers=args.ddpo_workers,
                         ddpo_lr=args.ddpo_lr, amortized_hidden=args.amortized_hidden, threads=args.threads, device=args.device or "cpu")
    run_comparison(cs)
    print((args.out / "report.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
