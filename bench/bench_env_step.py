"""Env-step throughput vs calling the plain diffusers pipeline on the same noise batch (one run, interleaved).

How to run::

    python bench/bench_env_step.py --batch 192 --repeats 7 --threads 2

Each repeat times (a) ``ShapesPipeline(prompt=..., latents=noise)`` directly and (b) one rendering ``step`` plus
the following reset ``step`` of ``NoiseBanditVectorEnv`` on the same noise (render + reward + info + autoreset),
back to back, so that machine noise hits both alike. Prints medians and the ratio env / pipeline (target <= 1.05).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=192)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from find_rl.envs.noise_bandit import NoiseBanditVectorEnv
    from find_rl.core.settings import SamplerSettings
    from find_rl.worlds.shapes.world import rare_prompts

    env = NoiseBanditVectorEnv(num_envs=args.batch, prompts=rare_prompts(), sampler=SamplerSettings(num_inference_steps=args.steps))
    pipe = env._b.sampler.pipeline  # the very same frozen diffusers pipeline object
    obs, info = env.reset(seed=0)
    prompts = [env.prompts[i] for i in info["prompt_index"]]
    noise = torch.randn(args.batch, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    actions = noise.reshape(args.batch, -1).numpy()
    plain, stepped = [], []
    for r in range(args.repeats + 1):
        t0 = time.perf_counter()
        pipe(prompt=prompts, latents=noise, num_inference_steps=args.steps, output_type="np")
        t1 = time.perf_counter()
        env.step(actions)  # renders + scores the batch
        env.step(actions)  # NEXT_STEP autoreset: renders nothing
        t2 = time.perf_counter()
        if r:  # the first round warms up both
            plain.append(t1 - t0)
            stepped.append(t2 - t1)
    mp, me = statistics.median(plain), statistics.median(stepped)
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    print(f"batch {args.batch}, {args.steps} DDIM steps, {args.repeats} repeats (medians)")
    print(f"plain diffusers pipeline : {mp:.3f} s/batch  {args.batch / mp:7.1f} images/s")
    print(f"env step (render+reward) : {me:.3f} s/batch  {args.batch / me:7.1f} images/s")
    print(f"ratio env / pipeline     : {me / mp:.3f}  (target <= 1.05)")
    print(f"per-repeat ratios        : {np.round(np.array(stepped) / np.array(plain), 3).tolist()}")


if __name__ == "__main__":
    main()
