"""Wall time of one FIND training iteration (RLlib) vs sampling + scoring the same images with the plain sampler.

How to run::

    python bench/bench_train_iteration.py --iterations 8 --threads 2

Builds the default FIND config (6 rare prompts x 32 samples = 192 images per iteration, env runner in the
driver), then alternates ``algo.train()`` with ``DiffusionSampler.sample`` + the detector reward on a batch of
the same size and prompts, so that machine noise hits both alike. Prints medians and the overhead ratio
(target <= 1.25 on CPU).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--iterations", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import ray

    from find_rl.rllib.config import find_ppo_config
    from find_rl.rewards.registry import WorldReward
    from find_rl.run.find_run import resolve
    from find_rl.diffusion.sampler import DiffusionSampler
    from find_rl.core.settings import RunSettings

    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    run = resolve(RunSettings().replace(threads=args.threads))
    algo = find_ppo_config(run).build_algo()
    sampler = DiffusionSampler.from_pretrained("shapes")
    reward = WorldReward("shapes")
    prompts = [p for _ in range(run.samples_per_prompt) for p in run.prompts]
    gen = torch.Generator().manual_seed(0)
    it_times, plain_times = [], []
    for i in range(args.iterations + 1):
        t0 = time.perf_counter()
        algo.train()
        t1 = time.perf_counter()
        imgs = sampler.sample(torch.randn(len(prompts), *sampler.latent_shape, generator=gen), prompts).images
        reward(imgs, prompts)
        t2 = time.perf_counter()
        if i:
            it_times.append(t1 - t0)
            plain_times.append(t2 - t1)
    algo.stop()
    ray.shutdown()
    mi, mp = statistics.median(it_times), statistics.median(plain_times)
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    print(f"batch {len(prompts)} images ({len(run.prompts)} prompts x {run.samples_per_prompt}), {args.iterations} iterations (medians)")
    print(f"FIND training iteration : {mi:.3f} s  {len(prompts) / mi:6.1f} images/s")
    print(f"plain sample + score    : {mp:.3f} s  {len(prompts) / mp:6.1f} images/s")
    print(f"overhead ratio          : {mi / mp:.3f}  (target <= 1.25)")


if __name__ == "__main__":
    main()
