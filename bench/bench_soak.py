"""Soak: train for many iterations on the shapes world while a scorer actor is killed every few iterations.

How to run::

    python bench/bench_soak.py --iterations 40 --kill-every 5 --scorers 2 --threads 2

Training uses reward-scorer actors (``--num-reward-workers``); every ``--kill-every`` iterations one scorer process is
killed (``ray.kill``, round robin), while the next iteration's batch is being scored, from a background thread.
Reports faults injected, faults survived (the actor came back with a new process), iterations completed, samples
lost (samples the learner should have seen but did not: must be 0) and time lost (sum over the faulty iterations
of their excess over the median healthy iteration).
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--iterations", type=int, default=40)
    p.add_argument("--kill-every", type=int, default=5)
    p.add_argument("--scorers", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--delay", type=float, default=0.6, help="seconds into an iteration at which the kill lands")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    import ray
    import torch

    import tempfile

    from find_rl.rllib.ray_session import ray_session
    from find_rl.run.find_run import FindRun, resolve
    from find_rl.core.settings import RunSettings

    torch.set_num_threads(args.threads)
    run = resolve(RunSettings().replace(num_reward_workers=args.scorers, threads=args.threads))
    session = ray_session(run.resources, actors=args.scorers)
    session.__enter__()
    fr = FindRun(run, Path(tempfile.mkdtemp()), live_metrics=False)
    pool, algo = fr.scorers, fr.algo
    faults, survived, lost, times, faulty = 0, 0, 0, [], []
    try:
        for it in range(args.iterations):
            killer = None
            if it and it % args.kill_every == 0:
                victim = pool.actors[faults % len(pool.actors)]
                pid = ray.get(victim.info.remote())["pid"]

                def kill(victim=victim):
                    time.sleep(args.delay)
                    ray.kill(victim, no_restart=False)

                killer = threading.Thread(target=kill)
                killer.start()
                faults += 1
            t0 = time.perf_counter()
            row = fr.train_iteration(it).to_dict()
            times.append(time.perf_counter() - t0)
            if killer is not None:
                killer.join()
                faulty.append(it)
                survived += int(ray.get(victim.info.remote(), timeout=120)["pid"] != pid)
            lost += run.batch_size - row["samples"]  # rendered but not trained on (the learner's own count)
            print(f"iter {it + 1:>3}  {times[-1]:.2f} s  align {row['alignment']:.3f}" + ("  <- scorer killed" if killer else ""),
                  flush=True)
    finally:
        fr.stop()
        session.__exit__(None, None, None)
    healthy = statistics.median(t for i, t in enumerate(times) if i not in faulty and i > 0)
    time_lost = sum(max(0.0, times[i] - healthy) for i in faulty)
    res = {"iterations_completed": len(times), "faults_injected": faults, "faults_survived": survived,
           "samples_lost": lost, "time_lost_s": round(time_lost, 2), "median_healthy_iteration_s": round(healthy, 3),
           "batch": run.batch_size}
    print(json.dumps(res))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0 if lost == 0 and survived == faults else 1


if __name__ == "__main__":
    raise SystemExit(main())
