"""Reward scoring on named Ray actors: same scores as in-process, and a scorer killed mid-batch or mid-run
loses no sample and counts none twice (Ray restarts the actor and re-executes the call on it)."""

import time

import numpy as np
import pytest

pytestmark = pytest.mark.slow

PROMPTS = ["a green circle", "a red square"]


def _images(n, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, 3, 16, 16)).astype(np.float32)


def test_pool_scores_like_the_in_process_reward(ray_local):
    from find_rl.rewards.registry import make_reward, score_batch
    from find_rl.rewards.scorers import ScorerPool

    pool = ScorerPool.create("shapes", 2)
    try:
        imgs, prompts = _images(64), [PROMPTS[i % 2] for i in range(64)]
        want = score_batch(make_reward("shapes"), imgs, prompts)
        for _ in range(2):  # both actors, round robin
            got = pool.score(imgs, prompts)
            np.testing.assert_array_equal(got["score"], want["score"])
            np.testing.assert_array_equal(got["aligned"], want["aligned"])
        assert ScorerPool.connect(2).actors[1]._actor_id == pool.actors[1]._actor_id  # found by name
    finally:
        pool.kill()
    with pytest.raises(ValueError, match="no scorer actors"):
        ScorerPool.connect(1)


def test_scorer_killed_mid_batch_is_restarted_and_the_batch_scored_once(ray_local):
    import ray

    from find_rl.rewards.registry import make_reward, score_batch
    from find_rl.rewards.scorers import ScorerPool

    pool = ScorerPool.create("shapes", 1)
    actor = pool.actors[0]
    try:
        before = ray.get(actor.info.remote())
        n = 12288  # about a second of detector work, so the kill lands while the batch is being scored
        imgs, prompts = _images(n, seed=1), [PROMPTS[i % 2] for i in range(n)]
        ref = actor.score.remote(ray.put(imgs), prompts)
        time.sleep(0.3)
        ray.kill(actor, no_restart=False)  # the real actor process dies mid-call
        got = ray.get(ref, timeout=120)
        after = ray.get(actor.info.remote())
        assert after["pid"] != before["pid"]  # a new process: the actor was restarted
        assert after["batches"] == 1  # the batch ran once on the restarted actor: nothing lost, nothing counted twice
        want = score_batch(make_reward("shapes"), imgs, prompts)
        assert len(got["score"]) == n
        np.testing.assert_array_equal(got["score"], want["score"])
    finally:
        pool.kill()


def test_training_with_scorer_actors_survives_a_killed_scorer(ray_local, tmp_path):
    import ray

    from find_rl.run.find_run import FindRun, resolve
    from find_rl.core.settings import RunSettings

    run = resolve(RunSettings(prompts=PROMPTS, samples_per_prompt=4).replace(num_epochs=1, num_reward_workers=1))
    with FindRun(run, tmp_path, live_metrics=False) as fr:
        pool, algo = fr.scorers, fr.algo
        first = fr.train_iteration(0)
        pid = ray.get(pool.actors[0].info.remote())["pid"]
        ray.kill(pool.actors[0], no_restart=False)
        rows = [fr.train_iteration(it) for it in (1, 2)]
        info = ray.get(pool.actors[0].info.remote())
        assert info["pid"] != pid and info["batches"] >= 1  # restarted and used again
        for row in [first, *rows]:
            assert row.samples_invalid == 0 and np.isfinite(row.reward_mean)
        f = algo.train()["learners"]["default_policy"]["find"]
        assert f["samples"] == run.batch_size  # every sample of the batch reached the learner
