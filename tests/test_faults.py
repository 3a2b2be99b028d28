"""Worker failure: an env-runner actor killed mid-training (by its actor id) is restarted and training goes on."""

import os
import time

import pytest

pytestmark = pytest.mark.slow


def test_killed_env_runner_is_restarted_and_training_continues(ray_local, tmp_path):
    import ray

    from find_rl.run.find_run import FindRun, resolve
    from find_rl.core.settings import RunSettings

    run = resolve(RunSettings(prompts=["a green circle", "a red square"], samples_per_prompt=4).replace(
        num_env_runners=2, num_epochs=1, threads=1))
    with FindRun(run, tmp_path, live_metrics=False) as fr:
        algo = fr.algo
        fr.train_iteration(0)
        group = algo.env_runner_group
        manager = group._worker_manager
        victim_id, victim = sorted(manager._actors.items())[0]
        old_pid = ray.get(victim.__ray_call__.remote(lambda self: os.getpid()))
        ray.kill(victim, no_restart=False)  # the process dies as in a crash; Ray restarts it, RLlib re-syncs it
        rows = []
        deadline = time.time() + 180  # the restarted runner reloads its model; RLlib's health probe then takes it back
        for it in range(1, 1000):  # (bounded by time, not iterations: on a loaded machine the restart takes longer)
            if time.time() > deadline:
                break
            rows.append(fr.train_iteration(it))
            if group.num_healthy_remote_workers() == 2 and len(rows) >= 2:
                break
        assert group.num_healthy_remote_workers() == 2
        pids = group.foreach_env_runner(lambda r: os.getpid(), local_env_runner=False)
        assert old_pid not in pids and len(set(pids)) == 2  # a fresh process replaced the dead one
        # every iteration trained on a full batch, the healthy runner covering for the dead one meanwhile
        assert all(r.samples == run.batch_size * run.runners and r.samples_invalid == 0 for r in rows)
        f = algo.train()["learners"]["default_policy"]["find"]
        assert f["samples"] == run.batch_size * run.runners  # full batches again from both runners
