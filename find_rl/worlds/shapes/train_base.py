"""Train the embedded shapes diffusion model from scratch (seeded, reproducible, a few minutes on 2 cores).

How to run::

    python -m find_rl.worlds.shapes.train_base --out find_rl/worlds/shapes/model --overwrite --steps 600 --seed 0 --threads 2

The recipe (measured in the CPU prototype, see the model card): 30k skewed images, x0 prediction, cosine
schedule, AdamW lr 2e-3 with a 100-step warm-up, batch 128, gradient clipping 1.0, EMA 0.995 with a warm-up,
10% null-prompt dropout. The output folder is a diffusers pipeline (``model_index.json``, ``unet/``,
``scheduler/``, ``text_encoder/``, safetensors weights) plus ``README.md``, the model card.
Same seed and thread count -> the same weights (torch CPU kernels are deterministic for a fixed thread count).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from find_rl.worlds.shapes.pipeline import ShapesPipeline, build_pipeline
from find_rl.worlds.shapes.world import all_prompts, combination_probs, make_dataset

logger = logging.getLogger(__name__)


def train(
    *,
    steps: int = 600,
    seed: int = 0,
    rare_p: float = 0.02,
    num_images: int = 30_000,
    batch_size: int = 128,
    lr: float = 2e-3,
    warmup: int = 100,
    ema_decay: float = 0.995,
    null_prob: float = 0.1,
    log_every: int = 100,
) -> ShapesPipeline:
    """Train a fresh shapes pipeline and return it with its EMA weights loaded."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    pipe = build_pipeline()
    unet, enc, sched = pipe.unet, pipe.text_encoder, pipe.scheduler
    images, combos = make_dataset(num_images, rare_p=rare_p, seed=seed)
    images_t = torch.from_numpy(images)
    prompts = all_prompts()
    token_table = enc.tokenize(prompts)  # (9, 2)
    null_ids = enc.tokenize([""])[0]
    combos_t = torch.from_numpy(combos)
    params = list(unet.parameters()) + list(enc.parameters())
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=lr)
    sched_lr = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    alphas = sched.alphas_cumprod
    t0 = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(0, num_images, (batch_size,), generator=gen)
        x0 = images_t[idx]
        ids = token_table[combos_t[idx]].clone()
        drop = torch.rand(batch_size, generator=gen) < null_prob
        ids[drop] = null_ids
        t = torch.randint(0, len(alphas), (batch_size,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        a = alphas[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        pred = unet(xt, t, class_labels=enc(ids)).sample
        loss = F.mse_loss(pred, x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched_lr.step()
        decay = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema, params):
                e.mul_(decay).add_(p.detach(), alpha=1 - decay)
        if log_every and (step + 1) % log_every == 0:
            logger.info("step %d/%d loss %.4f (%.1f s)", step + 1, steps, loss.item(), time.perf_counter() - t0)
    with torch.no_grad():
        for e, p in zip(ema, params):
            p.copy_(e)
    pipe.train_seconds = time.perf_counter() - t0
    return pipe.to(torch.float32)


def write_model_card(out: Path, *, args: argparse.Namespace, train_seconds: float, baseline: dict) -> None:
    probs = combination_probs(args.rare_p)
    rows = []
    for k, prompt in enumerate(all_prompts()):
        b = baseline["prompts"][prompt]
        rows.append(
            f"| {prompt} | {probs[k]:.1%} | {'rare' if b['rare'] else 'common'} | {b['alignment']:.3f} "
            f"[{b['ci_low']:.3f}, {b['ci_high']:.3f}] | {b['strict_alignment']:.3f} | {b['diversity']:.2f} |"
        )
    rare = [v["alignment"] for v in baseline["prompts"].values() if v["rare"]]
    common = [v["alignment"] for v in baseline["prompts"].values() if not v["rare"]]
    n_params = sum(p.numel() for p in ShapesPipeline.from_pretrained(out).unet.parameters())
    card = f"""# find_rl shapes model

A tiny text-conditioned pixel-space diffusion model (diffusers `UNet2DModel`, {n_params:,} parameters, x0
prediction, DDIM sampling) trained on a deliberately **skewed** procedural dataset of 16x16 coloured shapes.
It is `find_rl`'s embedded default: a CPU-sized miniature of a text-to-image model that ignores rare prompts.

## Data
{args.num_images:,} images of 3 shapes x 3 colours. Common combinations (red circle, green square, blue triangle):
{probs[0]:.1%} each. The six rare combinations: {args.rare_p:.1%} each. See `find_rl/worlds/shapes/world.py`.

## Training
`python -m find_rl.worlds.shapes.train_base --out <dir> --steps {args.steps} --seed {args.seed} --threads {args.threads}`
took {train_seconds:.0f} s of optimisation on this machine ({args.threads} torch threads, 2-core CPU). Recipe: batch
{args.batch_size}, AdamW lr {args.lr}, {args.steps} steps, EMA 0.995, 10% null-prompt dropout, cosine schedule.

## Baseline alignment under N(0, I) noise
DDIM {baseline['sampler']['num_inference_steps']} steps, eta 0, no guidance; {baseline['samples']} samples per prompt,
95% Wilson interval; strict = detector IoU >= 0.8 instead of 0.7 (both also require the detector's other checks: shape
margin, a square box, a clean background, a circle's empty corners); diversity = mean pairwise L2 distance between
same-prompt images. Produced by `python -m find_rl.evaluate --policy base --samples {baseline['samples']} --seed {baseline['seed']}`.

| prompt | share of data | kind | alignment [95% CI] | strict | diversity |
|---|---|---|---|---|---|
{chr(10).join(rows)}

Rare prompts average **{np.mean(rare):.3f}**, common prompts **{np.mean(common):.3f}**.
"""
    (out / "README.md").write_text(card)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="output folder (a diffusers pipeline)")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rare-p", type=float, default=0.02, help="share of each rare combination in the data")
    p.add_argument("--num-images", type=int, default=30_000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (results depend on it)")
    p.add_argument("--eval-samples", type=int, default=256, help="samples per prompt for the model card baseline")
    p.add_argument("--overwrite", action="store_true", help="replace a pipeline already in --out (e.g. the shipped model)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        check_args(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    pipe = train(steps=args.steps, seed=args.seed, rare_p=args.rare_p, num_images=args.num_images,
                 batch_size=args.batch_size, lr=args.lr)
    args.out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(args.out, safe_serialization=True)
    for f in args.out.rglob("*.safetensors"):
        f.chmod(0o644)  # readable by everyone once installed
    from find_rl.evaluation.scoring import evaluate_base  # the same code as `python -m find_rl.evaluate --policy base`

    baseline = evaluate_base(model=str(args.out), samples=args.eval_samples, seed=0)
    (args.out / "baseline.json").write_text(json.dumps(baseline, indent=2))
    write_model_card(args.out, args=args, train_seconds=pipe.train_seconds, baseline=baseline)
    logger.info("saved %s (%.0f s training)", args.out, pipe.train_seconds)
    return 0


def check_args(args: argparse.Namespace) -> None:
    """One ``ValueError`` line per bad flag, before minutes of training (and before anything in ``--out`` is replaced)."""
    for name in ("steps", "num_images", "batch_size", "threads"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.eval_samples < 2:
        raise ValueError(f"--eval-samples must be >= 2 (the model card's diversity compares pairs), got {args.eval_samples}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise ValueError(f"--lr must be a finite number > 0, got {args.lr}")
    if not (math.isfinite(args.rare_p) and args.rare_p >= 0):
        raise ValueError(f"--rare-p must be a finite share >= 0, got {args.rare_p}")
    combination_probs(args.rare_p)  # and small enough to leave mass for the common combinations
    if (args.out / "model_index.json").exists() and not args.overwrite:
        raise ValueError(f"{args.out} already holds a pipeline; pass --overwrite to replace it, or choose another --out")
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out} is a file; choose a folder")


if __name__ == "__main__":
    sys.exit(main())
