"""Time one training step of the scenes model under the ways a CPU step could be made cheaper, side by side.

The scenes model's 30-minute budget buys ~3,800 steps of batch 128 on 2 cores; a cheaper step would buy more of them.
This times the optimisation step of ``train_model.train`` (forward, x0 loss, backward, AdamW) on the same four
batches for each variant, in one process, and prints each variant's milliseconds per step and its ratio to the
shipped float32 step:

- ``fp32``: the step as shipped;
- ``channels_last``: the UNet's weights in channels-last memory format;
- ``bf16``: ``torch.autocast("cpu", torch.bfloat16)`` around the forward pass (oneDNN's bf16 kernels; AVX-512 BF16
  where the CPU has it);
- ``compile``: ``torch.compile`` of the UNet (inductor; its compile time is reported apart, as warm-up);
- ``patch4``: the UNet on 4 x 4 patches (an 8 x 8 grid instead of 16 x 16; ``--widths`` sets its block widths):
  a cheaper step from a different model, not a faster kernel.

    python bench/scenes_train_step.py                      # every variant, 10 timed steps each
    python bench/scenes_train_step.py --variants fp32 bf16 --steps 20

Run it alone (a second torch job on the same cores distorts every number).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

VARIANTS = ("fp32", "channels_last", "bf16", "compile", "patch4")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument("--steps", type=int, default=10, help="timed steps per variant (after 3 warm-up steps)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--widths", type=int, nargs="+", default=[64, 64, 64], help="patch4: the UNet's block widths")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1:
        print("error: --steps and --batch-size must be >= 1", file=sys.stderr)
        return 2

    import numpy as np
    import torch
    import torch.nn.functional as F

    from find_rl.worlds.scenes.pipeline import ScenesModelConfig, build_pipeline
    from find_rl.worlds.scenes.render import sample_training_batch
    from find_rl.worlds.scenes.splits import Knobs
    from find_rl.worlds.scenes.train_model import TrainConfig

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    batches = [sample_training_batch(args.batch_size, rng, Knobs(sizes=TrainConfig().sizes)) for _ in range(4)]

    def time_variant(name: str) -> tuple[float, float]:
        torch.manual_seed(0)
        model = ScenesModelConfig(patch_size=4, block_out_channels=tuple(args.widths)) if name == "patch4" else ScenesModelConfig()
        pipe = build_pipeline(model)
        params = [*pipe.unet.parameters(), *pipe.text_encoder.parameters()]
        if name == "channels_last":
            pipe.unet.to(memory_format=torch.channels_last)
        if name == "compile":
            pipe.unet = torch.compile(pipe.unet)
        opt = torch.optim.AdamW(params, lr=1e-3)
        alphas = pipe.scheduler.alphas_cumprod
        gen = torch.Generator().manual_seed(0)

        def step(i: int) -> None:
            images, prompts = batches[i % len(batches)]
            x0 = torch.from_numpy(images)
            t = torch.randint(0, len(alphas), (len(x0),), generator=gen)
            a = alphas[t].view(-1, 1, 1, 1)
            xt = a.sqrt() * x0 + (1 - a).sqrt() * torch.randn(x0.shape, generator=gen)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=name == "bf16"):
                pred = pipe.denoise(xt, t, pipe.encode_ids(pipe.tokenize(prompts)))
            loss = F.mse_loss(pred.float(), x0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        t0 = time.perf_counter()
        for i in range(3):
            step(i)
        warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(args.steps):
            step(i)
        return (time.perf_counter() - t0) / args.steps, warm

    print(f"# {platform.machine()}, {args.threads} torch threads, torch {torch.__version__}, batch {args.batch_size}, "
          f"{args.steps} timed steps")
    print("| variant | ms / step | vs fp32 | warm-up (3 steps) |")
    print("|---|---|---|---|")
    base = None
    for name in args.variants:
        per_step, warm = time_variant(name)
        base = per_step if name == "fp32" else base
        ratio = f"{per_step / base:.2f}x" if base else "—"
        print(f"| {name} | {per_step * 1000:.0f} | {ratio} | {warm:.1f} s |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
