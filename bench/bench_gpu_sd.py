"""GPU benchmark on a Stable-Diffusion-1.5-shaped stack: FIND's training iteration vs the plain diffusers pipeline.

How to run (GPU; real weights if you have them, else random weights of the same shapes are built and saved)::

    python bench/bench_gpu_sd.py --out bench/gpu                       # SD-1.5 shapes + CLIP ViT-L/14 reward, fp16
    python bench/bench_gpu_sd.py --model PATH_OR_ID --clip PATH_OR_ID  # real checkpoints
    python bench/bench_gpu_sd.py --preset tiny --device cpu --out /tmp/b --quick   # CPU smoke run at toy sizes

Measures, in one run and on one device (medians of the timed repeats, after a warm-up):

1. **overhead**: a FIND training iteration (RLlib ``algo.train()``: policy forward, render, CLIP reward, calibration,
   PPO epochs) vs the plain pipeline called on the same batch size, prompts and steps, followed by the same reward;
   the ratio is the cost of the trainer on top of the sampler;
2. **throughput**: plain pipeline images/s with classifier-free guidance at 20 steps (batch 64) and 50 steps
   (batch 32), and peak GPU memory of each;
3. **paper loop**: one image per call at 50 steps, as the released code samples;
4. **fast path**: the denoising loop (``output_type="latent"``) and the whole pipeline, eager vs ``torch.compile``
   + channels_last UNet (``SamplerSettings.compile_unet``), same batch.

Every phase appends to ``OUT/gpu_bench.json`` as soon as it ends, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

PROMPTS = ["a green dog", "four pandas on a red sofa"]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, repeats: int, warmup: int = 1) -> tuple[float, float]:
    """(median seconds, peak GPU GiB over the timed calls) of ``fn()``."""
    for _ in range(warmup):
        fn()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")
    return statistics.median(times), peak


class Report:
    def __init__(self, out: Path, meta: dict):
        self.path = out / "gpu_bench.json"
        out.mkdir(parents=True, exist_ok=True)
        self.data = {"machine": meta}
        self._write()

    def add(self, key: str, value: dict) -> None:
        self.data[key] = value
        self._write()
        print(f"[{key}] " + json.dumps(value), flush=True)

    def _write(self) -> None:
        self.path.write_text(json.dumps(self.data, indent=2))


def plain_call(pipe, prompts, latents, steps, cfg, output_type="np"):
    return pipe(prompt=prompts, latents=latents, num_inference_steps=steps, guidance_scale=cfg, eta=0.0,
                output_type=output_type)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("bench/gpu"))
    p.add_argument("--model", default=None, help="SD pipeline folder or hub id (default: random SD-1.5-shaped weights)")
    p.add_argument("--clip", default=None, help="CLIP reward folder or hub id (default: random ViT-L/14-shaped weights)")
    p.add_argument("--preset", choices=("sd15", "sdxl", "modelscope", "tiny", "tiny-sdxl", "tiny-t2v"), default="sd15",
                   help="shapes of the random-weight stand-in pipeline (find_rl.diffusion.random_weights.PIPELINE_PRESETS)")
    p.add_argument("--batches", nargs="+", default=None, metavar="NxSTEPS",
                   help="throughput phase: batch x steps pairs (default: BATCHx20 and BATCH/2x50)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/find_rl_bench_models"))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, help="float16 on GPU, float32 on CPU by default")
    p.add_argument("--batch", type=int, default=64, help="images per training iteration / plain call at 20 steps")
    p.add_argument("--iterations", type=int, default=3, help="timed repeats per measurement")
    p.add_argument("--quick", action="store_true", help="toy sizes for a CPU smoke run (batch 4, 2 and 3 steps)")
    p.add_argument("--find-compile", action="store_true",
                   help="overhead phase: the FIND run uses --compile-unet while the plain pipeline stays eager")
    p.add_argument("--skip", nargs="*", default=[], choices=("overhead", "throughput", "paper", "fastpath"))
    args = p.parse_args(argv)
    dev = args.device
    dtype = args.dtype or ("float16" if dev.startswith("cuda") else "float32")
    steps_a, steps_b = (2, 3) if args.quick else (20, 50)
    batch = 4 if args.quick else args.batch
    cfg = 7.5
    if not dev.startswith("cuda"):
        torch.set_num_threads(2)
    from find_rl.diffusion.models import load_pipeline, torch_dtype
    from find_rl.diffusion.random_weights import save_clip_model, save_pipeline
    from find_rl.diffusion.sampler import DiffusionSampler, SamplerSettings

    meta = {"python": platform.python_version(), "torch": torch.__version__, "device": dev, "dtype": dtype,
            "gpu": torch.cuda.get_device_name(0) if dev.startswith("cuda") else platform.processor() or platform.machine(),
            "model": args.model or f"random weights, {args.preset} shapes", "reward": args.clip or ("random CLIP weights" if "overhead" not in args.skip else "not used")}
    import diffusers

    meta["diffusers"] = diffusers.__version__
    rep = Report(args.out, meta)
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    t0 = time.perf_counter()
    init_dev = dev if dev.startswith("cuda") else "cpu"
    model = args.model or save_pipeline(args.workdir / f"sd-{args.preset}", args.preset, device=init_dev,
                                        dtype=torch_dtype(dtype))
    clip = None
    if "overhead" not in args.skip:
        clip = args.clip or save_clip_model(args.workdir / "clip", "tiny" if args.preset.startswith("tiny") else "vit-l-14",
                                            device=init_dev, dtype=torch_dtype(dtype))
    rep.add("setup", {"build_and_save_s": round(time.perf_counter() - t0, 1)})

    from find_rl.rewards.registry import make_reward

    reward = make_reward(f"clip={clip}", device=dev, dtype=dtype) if clip else None
    pipe = load_pipeline(model, device=dev, dtype=dtype)
    sampler = DiffusionSampler(pipe, SamplerSettings(device=dev, dtype=dtype))  # swaps in DDIM, as training does
    shape = sampler.latent_shape
    gen = torch.Generator().manual_seed(0)

    def noise(n):
        return torch.randn(n, *shape, generator=gen).to(dev, torch_dtype(dtype))

    def prompts(n):
        return [PROMPTS[i % len(PROMPTS)] for i in range(n)]

    def phase(name):
        """Run a phase unless skipped; an error is recorded and the next phase still runs."""
        def wrap(fn):
            if name in args.skip:
                return
            try:
                fn()
            except Exception as e:  # a benchmark keeps what the other phases measure
                rep.add(name, {"error": f"{e.__class__.__name__}: {str(e)[:300]}"})
        return wrap

    @phase("overhead")
    def _overhead():
        import ray

        from find_rl.rllib.config import find_ppo_config
        from find_rl.core.settings import RunSettings

        ray.init(address="local", include_dashboard=False, log_to_driver=False, num_cpus=4,
                 num_gpus=1 if dev.startswith("cuda") else 0)
        run = RunSettings(model=model, reward=[f"clip={clip}"], prompts=PROMPTS, samples_per_prompt=batch // len(PROMPTS),
                          latent_shape=tuple(shape)).replace(device=dev, dtype=dtype, num_inference_steps=steps_a, guidance_scale=cfg,
                                                             threads=2, compile_unet=args.find_compile)
        algo = find_ppo_config(run).build_algo()
        n = run.batch_size

        def plain_and_score():
            out = plain_call(pipe, prompts(n), noise(n), steps_a, cfg)
            reward(np.asarray(out.images).transpose(0, 3, 1, 2) * 2 - 1, prompts(n))

        it_times, plain_times = [], []
        c0 = time.perf_counter()
        algo.train()  # warm-up of both paths (and the compile, with --find-compile)
        first_s = time.perf_counter() - c0
        plain_and_score()
        for _ in range(args.iterations):  # alternate, so drift hits both alike
            sync(dev)
            a = time.perf_counter()
            result = algo.train()
            sync(dev)
            b = time.perf_counter()
            plain_and_score()
            sync(dev)
            it_times.append(b - a)
            plain_times.append(time.perf_counter() - b)
        mi, mp = statistics.median(it_times), statistics.median(plain_times)
        from find_rl.core import keys

        f = result["learners"]["default_policy"][keys.FIND]
        rep.add("overhead_compiled" if args.find_compile else "overhead", {
                             "find_compile_unet": args.find_compile, "find_first_iteration_s": round(first_s, 1),
                             "batch": n, "steps": steps_a, "cfg": cfg, "find_iteration_s": round(mi, 3),
                             "plain_pipeline_plus_reward_s": round(mp, 3), "overhead_ratio": round(mi / mp, 3),
                             "find_images_per_s": round(n / mi, 2), "plain_images_per_s": round(n / mp, 2),
                             "reward_mean_last": round(float(f[keys.REWARD_MEAN]), 3)})
        algo.stop()
        ray.shutdown()

    @phase("throughput")
    def _throughput():
        res = {}
        pairs = [tuple(int(v) for v in b.split("x")) for b in args.batches] if args.batches else \
            [(batch, steps_a), (max(batch // 2, 1), steps_b)]
        for n, steps in pairs:
            s, peak = timed(lambda: plain_call(pipe, prompts(n), noise(n), steps, cfg), dev, args.iterations)
            res[f"{n}x{steps}"] = {"seconds": round(s, 3), "images_per_s": round(n / s, 2), "peak_gib": round(peak, 2)}
        rep.add("throughput", res)

    @phase("paper")
    def _paper():
        s, peak = timed(lambda: plain_call(pipe, prompts(1), noise(1), steps_b, cfg), dev, args.iterations)
        rep.add("paper_loop", {"batch": 1, "steps": steps_b, "images_per_s": round(1 / s, 3), "peak_gib": round(peak, 2)})

    @phase("fastpath")
    def _fastpath():
        n = 4 if args.quick else 16
        res = {}
        for name in ("eager", "compiled"):
            if name == "compiled":
                c0 = time.perf_counter()
                DiffusionSampler(pipe, SamplerSettings(device=dev, dtype=dtype, compile_unet=True))  # compiles pipe.unet in place
                plain_call(pipe, prompts(n), noise(n), steps_b, cfg, output_type="latent")  # compiles
                res["compile_s"] = round(time.perf_counter() - c0, 1)
            loop, _ = timed(lambda: plain_call(pipe, prompts(n), noise(n), steps_b, cfg, output_type="latent"), dev, args.iterations)
            full, peak = timed(lambda: plain_call(pipe, prompts(n), noise(n), steps_b, cfg), dev, args.iterations)
            res[name] = {"denoise_loop_images_per_s": round(n / loop, 2), "pipeline_images_per_s": round(n / full, 2),
                         "peak_gib": round(peak, 2)}
        res["speedup_denoise_loop"] = round(res["compiled"]["denoise_loop_images_per_s"] / res["eager"]["denoise_loop_images_per_s"], 3)
        res["speedup_pipeline"] = round(res["compiled"]["pipeline_images_per_s"] / res["eager"]["pipeline_images_per_s"], 3)
        res["batch"], res["steps"] = n, steps_b
        rep.add("fastpath", res)
    print(f"wrote {rep.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
