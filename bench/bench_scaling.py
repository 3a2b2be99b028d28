"""Rollout throughput with 1, 2, ... env-runner actors (one torch thread each), measured side by side in one run.

How to run::

    python bench/bench_scaling.py                                   # CPU: 1 vs 2 runners on the shapes world
    python bench/bench_scaling.py --device cuda --runners 1 2 4     # N runners sharing one GPU (1/N GPU each)

For each runner count it builds the default FIND config (six rare prompts, ``--samples-per-prompt`` images per prompt
per runner), then times ``EnvRunner.sample`` on every remote runner at once (render + detector reward; the
learner is not involved), and reports images/s and the ratio to one runner. Every image is counted from the
envs' own render counters, not assumed. Target on 2 CPU cores: >= 1.6x for 2 runners.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path


def _rendered(env_runner) -> int:
    return int(env_runner.env.unwrapped.images_rendered)


def measure(runners: int, args) -> dict:
    from find_rl.rllib.config import find_ppo_config
    from find_rl.run.find_run import resolve
    from find_rl.core.settings import RunSettings

    gpu = args.device.startswith("cuda")
    run = resolve(RunSettings(samples_per_prompt=args.samples_per_prompt).replace(
        num_env_runners=runners, num_gpus_per_env_runner=(1.0 / max(args.runners)) if gpu else 0.0, device=args.device,
        threads=1))
    algo = find_ppo_config(run).build_algo()
    group = algo.env_runner_group

    def sample_all() -> int:
        before = sum(group.foreach_env_runner(_rendered, local_env_runner=False))
        group.foreach_env_runner(lambda r: r.sample(num_timesteps=run.batch_size), local_env_runner=False)
        return sum(group.foreach_env_runner(_rendered, local_env_runner=False)) - before

    sample_all()  # warm-up (first reset, lazy init)
    times, images = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        n = sample_all()
        times.append(time.perf_counter() - t0)
        images.append(n)
    algo.stop()
    s = statistics.median(times)
    return {"runners": runners, "images_per_call": images[0], "seconds": round(s, 3),
            "images_per_s": round(statistics.median(images) / s, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runners", type=int, nargs="+", default=[1, 2])
    p.add_argument("--device", default="cpu")
    p.add_argument("--samples-per-prompt", type=int, default=32, help="images per prompt per runner per call")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    import ray
    import torch

    gpu = args.device.startswith("cuda")
    ray.init(address="local", include_dashboard=False, log_to_driver=False,
             num_cpus=max(max(args.runners), os.cpu_count() or 1), num_gpus=1 if gpu else 0)
    try:
        rows = [measure(n, args) for n in args.runners]
    finally:
        ray.shutdown()
    base = rows[0]["images_per_s"]
    for r in rows:
        r["ratio_to_first"] = round(r["images_per_s"] / base, 3)
    where = torch.cuda.get_device_name(0) if gpu else f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    print(f"machine: {where}; torch {torch.__version__}; 1 torch thread per runner; device {args.device}")
    print("| env runners | images per call | seconds per call (median) | images/s | vs first row |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['runners']} | {r['images_per_call']} | {r['seconds']} | {r['images_per_s']} | {r['ratio_to_first']}x |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": where, "device": args.device, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
