"""Train the frozen scenes text-to-image model from scratch: text encoder and UNet jointly, seeded and reproducible.

How to run (the shipped model; see its model card for the measured wall time)::

    python -m find_rl.worlds.scenes.train_model --out find_rl/worlds/scenes/model --seed 0 --threads 2 --overwrite

Data: every batch is drawn on the fly by ``render.sample_training_batch`` from one ``numpy`` generator (the world's
knobs; never a held-out composition), ~12 ms a batch of 128 against ~0.6 s for the optimisation step, so nothing is
pre-rendered. Recipe (``TrainConfig``): x0 prediction with the squared-cosine schedule, timesteps uniform over the
1,000 training steps
(``focus_fraction`` of them on the DDIM sampler's own timesteps), AdamW with a linear warm-up then cosine decay, gradient clipping, EMA of the weights (the EMA
weights are saved), null-prompt dropout (for classifier-free guidance). Same seed and thread count -> the same
weights (torch CPU kernels are deterministic for a fixed thread count).

The output folder is a diffusers pipeline (``model_index.json``, ``text_encoder/``, ``tokenizer/``, ``unet/``,
``scheduler/``, safetensors) plus ``baseline.json`` (``baseline.evaluate`` on ``default_eval_prompts()``) and
``README.md``, the model card.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler

from find_rl.core.settings import SamplerSettings
from find_rl.diffusion.sampler import sampler_text
from find_rl.worlds.scenes.pipeline import ScenesModelConfig, ScenesPipeline, build_pipeline, num_parameters
from find_rl.worlds.scenes.geometry import SIZES
from find_rl.worlds.scenes.render import sample_training_batch
from find_rl.worlds.scenes.grammar import CATEGORIES
from find_rl.worlds.scenes.splits import Knobs

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """The training recipe; every default declared once here."""

    steps: int = 3800
    batch_size: int = 128
    lr: float = 2e-3
    warmup: int = 100
    final_lr_fraction: float = 0.1  # cosine decay from lr to lr * this at the last step
    weight_decay: float = 0.01
    ema_decay: float = 0.998
    null_prob: float = 0.1
    grad_clip: float = 1.0
    #: Share of the batch whose timestep is drawn from the DDIM sampler's own timesteps (``ScenesModelConfig
    #: .num_inference_steps`` of them); the rest are uniform over all training timesteps.
    focus_fraction: float = 0.5
    seed: int = 0
    log_every: int = 100
    #: Sprite sides of the training data (``splits.Knobs.sizes``); the world's scorer accepts every side of ``SIZES``.
    sizes: tuple[int, ...] = (11,)


def lr_factor(step: int, c: TrainConfig) -> float:
    if step < c.warmup:
        return (step + 1) / c.warmup
    frac = (step - c.warmup) / max(1, c.steps - c.warmup)
    return c.final_lr_fraction + (1 - c.final_lr_fraction) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))


def train(c: TrainConfig = TrainConfig(), model: ScenesModelConfig = ScenesModelConfig(), *,
          log=logger.info) -> tuple[ScenesPipeline, dict]:
    """Train a fresh scenes pipeline; return it with its EMA weights loaded, and a record (losses, seconds)."""
    t_start = time.perf_counter()
    torch.manual_seed(c.seed)
    gen = torch.Generator().manual_seed(c.seed)
    rng = np.random.default_rng(c.seed)
    pipe = build_pipeline(model)
    unet, enc, sched = pipe.unet, pipe.text_encoder, pipe.scheduler
    unet.train()
    enc.train()
    cache: dict[str, torch.Tensor] = {}
    null_ids = pipe.tokenize([""])[0]

    def ids_of(prompts: list[str]) -> torch.Tensor:
        missing = sorted(set(prompts) - cache.keys())
        if missing:
            cache.update(zip(missing, pipe.tokenize(missing)))
        return torch.stack([cache[p] for p in prompts])

    params = [p for p in (*unet.parameters(), *enc.parameters()) if p.requires_grad]
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, c))
    alphas = sched.alphas_cumprod
    sampling = DDIMScheduler.from_config(sched.config)
    sampling.set_timesteps(model.num_inference_steps)
    focus = sampling.timesteps.clone()
    losses, data_s = [], 0.0
    knobs = Knobs(sizes=tuple(c.sizes))
    for step in range(c.steps):
        t0 = time.perf_counter()
        images, prompts = sample_training_batch(c.batch_size, rng, knobs)
        x0 = torch.from_numpy(images)
        ids = ids_of(prompts)
        data_s += time.perf_counter() - t0
        drop = torch.rand(c.batch_size, generator=gen) < c.null_prob
        ids[drop] = null_ids
        t = torch.randint(0, len(alphas), (c.batch_size,), generator=gen)
        on_focus = torch.rand(c.batch_size, generator=gen) < c.focus_fraction
        t = torch.where(on_focus, focus[torch.randint(0, len(focus), (c.batch_size,), generator=gen)], t)
        noise = torch.randn(x0.shape, generator=gen)
        a = alphas[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        pred = pipe.denoise(xt, t, pipe.encode_ids(ids))
        loss = F.mse_loss(pred, x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, c.grad_clip)
        opt.step()
        lr_sched.step()
        decay = min(c.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_mul_(ema, decay)
            torch._foreach_add_(ema, [p.detach() for p in params], alpha=1 - decay)
        losses.append(loss.item())
        if c.log_every and (step + 1) % c.log_every == 0:
            log(f"step {step + 1}/{c.steps} loss {np.mean(losses[-c.log_every:]):.4f} "
                f"lr {opt.param_groups[0]['lr']:.2e} ({time.perf_counter() - t_start:.0f} s)")
    with torch.no_grad():
        for e, p in zip(ema, params):
            p.copy_(e)
    unet.eval()
    enc.eval()
    record = {"train_seconds": time.perf_counter() - t_start, "data_seconds": data_s,
              "loss_first_100": float(np.mean(losses[:100])), "loss_last_100": float(np.mean(losses[-100:]))}
    return pipe, record


def write_model_card(out: Path, *, command: str, train: TrainConfig, model: ScenesModelConfig, record: dict,
                     baseline: dict) -> None:
    from find_rl.worlds.scenes.baseline import markdown_table

    n = num_parameters(ScenesPipeline.from_pretrained(out))
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file() and f.name not in ("README.md", "baseline.json"))
    t = baseline["table"]
    common = t["common"]["all"]["aligned"]
    s = baseline["sampler"]
    pooled = (", plus an attention-pooled text summary added to the time embedding (`addition_embed_type='text'`)"
              if model.pooled_text else "")
    encoder = ("`T5EncoderModel` (bidirectional, as the T5 encoders of Imagen, PixArt and SD3: the first object's\n  "
               "tokens see the relation after them), gated-GELU feed-forward of " + str(model.text_intermediate)
               if model.text_encoder == "t5" else "`CLIPTextModel` (causal, as SD 1.5's)")
    coords = (f", with {model.coord_channels} fixed coordinate channels (x, y) appended to its input (CoordConv)"
              if model.coord_channels else "")
    spacing = (" (the first sampling step is at pure noise, t = 999)" if model.timestep_spacing == "trailing" else "")
    k = Knobs()
    knobs = (f"`splits.Knobs()`: rare colours x{k.rare_colour}, rare sides x{k.rare_side}, three objects x{k.rare_count}, "
             f"a cross alone x{k.rare_single}, rare shape pairs x{k.rare_pair}, floor {k.floor}; category mix "
             + ", ".join(f"{c} {m}" for c, m in zip(CATEGORIES, k.category_mix)))
    sizes_note = ("" if tuple(train.sizes) == SIZES else
                  f" (of the world's {', '.join(map(str, SIZES))}: one sprite per shape to learn; the scorer accepts every side)")
    card = f"""# find_rl scenes model

The frozen text-to-image model of the `scenes` world (`find_rl/worlds/scenes`): a pixel-space diffusion pipeline
built from the classes of a real text-to-image model, trained from scratch on the world's procedural data. Load it
with `ScenesPipeline.from_pretrained(folder)` (`find_rl.worlds.scenes.pipeline`).

## Architecture ({n['unet'] + n['text_encoder']:,} parameters, {size / 1e6:.1f} MB on disk)

- `tokenizer`: word-level `PreTrainedTokenizerFast` (`AutoTokenizer` loads it), `[BOS] words [EOS]` padded to
  {model.max_length} tokens; an unknown word is `[UNK]` (the pipeline rejects it first through `grammar.parse_prompt`).
- `text_encoder`: {encoder}, {model.text_layers} layers, width {model.text_hidden}, {model.text_heads} heads
  ({n['text_encoder']:,} parameters), trained jointly with the UNet.
- `unet`: `UNet2DConditionModel` ({n['unet']:,} parameters), blocks {list(model.down_block_types)}, widths
  {list(model.block_out_channels)}, cross-attention on the encoder's `last_hidden_state`{pooled}.
  It sees the 3x32x32 image as {model.patch_size}x{model.patch_size} patches (`pixel_unshuffle`, lossless){coords} and predicts x0.
- `scheduler`: `DDIMScheduler`, {model.beta_schedule}, {model.num_train_timesteps} training steps, `prediction_type="sample"`,
  `timestep_spacing="{model.timestep_spacing}"`{spacing}.
- No VAE: the initial noise is the image-shaped `(3, 32, 32)` tensor the DDIM loop starts from (`latents=`).

## Data

`render.sample_training_batch` drawn on the fly: {train.steps * train.batch_size:,} images ({train.steps} batches of
{train.batch_size}), sprite sides {', '.join(map(str, train.sizes))} px{sizes_note}, prompts by the world's frequency knobs ({knobs}), never a held-out composition (unseen pairs, unseen relations, swapped pairs).

## Training

`{command}`

{record['train_seconds']:.0f} s wall on {platform.machine()} with {torch.get_num_threads()} torch threads (a 2-core
CPU shared with other work, run under a CPU lock), data generation included ({record['data_seconds']:.0f} s of it).
Recipe: x0 prediction, timesteps {train.focus_fraction:.0%} from the {model.num_inference_steps} DDIM sampling steps and the rest uniform, AdamW lr {train.lr} (warm-up {train.warmup}, cosine to
{train.final_lr_fraction} x), weight decay {train.weight_decay}, batch {train.batch_size}, {train.steps} steps, grad clip
{train.grad_clip}, EMA {train.ema_decay}, {train.null_prob:.0%} null-prompt dropout. Loss (x0 MSE): first 100 steps
{record['loss_first_100']:.4f}, last 100 steps {record['loss_last_100']:.4f}.

## Baseline under N(0, I) noise

`python -m find_rl.worlds.scenes.baseline --samples {baseline['samples']} --seed {baseline['seed']}`: the world's
sampler, {sampler_text(SamplerSettings(**{k: v for k, v in s.items() if k != 'timestep_spacing'}))}; {baseline['n_prompts']} prompts of
`baseline.default_eval_prompts()` (up to 12 per split x category), {baseline['samples']} noise draws each. Cell: aligned rate
[95% Wilson interval] / strict rate (n = prompts). Sampling: {baseline['images_per_second']:.0f} images/s.

{markdown_table(baseline)}

Common prompts (pooled): **{common:.3f}** aligned.
"""
    (out / "README.md").write_text(card)


def main(argv: list[str] | None = None) -> int:
    d = TrainConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="output folder (a diffusers pipeline)")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--focus-fraction", type=float, default=d.focus_fraction,
                   help="share of timesteps drawn from the DDIM sampler's own (the rest uniform)")
    p.add_argument("--sizes", type=int, nargs="+", default=list(d.sizes),
                   help=f"sprite sides of the training data, a subset of {list(SIZES)}")
    p.add_argument("--text-encoder", choices=("t5", "clip"), default=ScenesModelConfig.text_encoder,
                   help="T5EncoderModel (bidirectional, the default) or CLIPTextModel (causal, as SD 1.5's)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (the weights depend on it)")
    p.add_argument("--eval-samples", type=int, default=16, help="noise draws per prompt for baseline.json (0: skip)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out (e.g. the shipped model)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    problem = check_args(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    cfg = TrainConfig(steps=args.steps, seed=args.seed, batch_size=args.batch_size, lr=args.lr,
                      focus_fraction=args.focus_fraction, sizes=tuple(args.sizes))
    model = ScenesModelConfig(text_encoder=args.text_encoder)
    pipe, record = train(cfg, model)
    if args.out.exists():
        for f in sorted(args.out.rglob("*"), reverse=True):
            f.unlink() if f.is_file() or f.is_symlink() else f.rmdir()
    args.out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(args.out, safe_serialization=True)
    (args.out / "train_config.json").write_text(json.dumps({"train": asdict(cfg), "model": model.as_dict(),
                                                           "threads": args.threads, **record}, indent=1))
    logger.info("saved %s (%.0f s training)", args.out, record["train_seconds"])
    if args.eval_samples:
        from find_rl.worlds.scenes.baseline import evaluate

        loaded = ScenesPipeline.from_pretrained(args.out)
        loaded.set_progress_bar_config(disable=True)
        baseline = evaluate(loaded, samples=args.eval_samples, seed=0)
        (args.out / "baseline.json").write_text(json.dumps(baseline, indent=1))
        command = " ".join(["python -m find_rl.worlds.scenes.train_model", *(argv if argv is not None else sys.argv[1:])])
        write_model_card(args.out, command=command, train=cfg, model=model, record=record, baseline=baseline)
    return 0


def check_args(args: argparse.Namespace) -> str | None:
    """What is wrong with the flags (one line), before minutes of training; ``None`` when nothing is."""
    for name in ("steps", "batch_size", "threads"):
        if getattr(args, name) < 1:
            return f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}"
    if args.eval_samples < 0:
        return f"--eval-samples must be >= 0, got {args.eval_samples}"
    if not (math.isfinite(args.lr) and args.lr > 0):
        return f"--lr must be a finite number > 0, got {args.lr}"
    if not set(args.sizes) <= set(SIZES):
        return f"--sizes must be among the world's sprite sides {list(SIZES)}, got {args.sizes}"
    if not 0 <= args.focus_fraction <= 1:
        return f"--focus-fraction must be in [0, 1], got {args.focus_fraction}"
    if args.out.exists() and not args.out.is_dir():
        return f"--out {args.out} is a file; choose a folder"
    if args.out.is_dir() and any(args.out.iterdir()) and not args.overwrite:
        return f"--out {args.out} is not empty; pass --overwrite to replace it, or choose another folder"
    return None


if __name__ == "__main__":
    sys.exit(main())
