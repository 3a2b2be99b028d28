"""Learning, not wiring: a short run on one rare prompt raises its training reward clearly over the frozen model, for
every policy family; the same run with the advantage sign flipped does not (so each of these tests can fail).

Iteration 1's batch is drawn from the initial policy, which is exactly N(0, I): its mean reward is the frozen model's.
The flip negates the advantages the learner trains on (the calibrator's output), in this process: with no env-runner
actors and no learner actors, RLlib's learner runs here."""

import numpy as np
import pytest

pytestmark = pytest.mark.slow

PROMPT = "a red triangle"  # rare: the frozen model draws it ~3% of the time (the mended detector)
FAMILIES = {
    "per-prompt": dict(policy_type="per-prompt"),
    "amortized": dict(policy_type="amortized"),
    "flow": dict(policy_type="flow"),
    # the components share the batch (16 draws each here) and learn slower: lr 0.05 keeps them from random-walking
    "mixture": dict(policy_type="mixture", mixture_components=2, lr=0.05, iterations=40),
}


def _learn(tmp_path, family: str, *, flip: bool = False, monkeypatch=None) -> tuple[float, float, float]:
    from find_rl.objectives.calibration import RewardCalibrator
    from find_rl.run.find_run import FindRun, resolve
    from find_rl.core.settings import RunSettings

    if flip:
        update = RewardCalibrator.update

        def flipped(self, **kw):
            result = update(self, **kw)
            result.advantages = -result.advantages
            return result

        monkeypatch.setattr(RewardCalibrator, "update", flipped)
    run = resolve(RunSettings(prompts=[PROMPT], samples_per_prompt=32).replace(
        **(dict(iterations=30, lr=0.1, threads=2, seed=0) | FAMILIES[family])))
    with FindRun(run, tmp_path, live_metrics=False) as fr:
        rows = list(fr.iterations(checkpoints=False))
    frozen = rows[0].reward_mean
    learned = float(np.mean([r.reward_mean for r in rows[-5:]]))
    return frozen, learned, rows[-1].mu_abs_mean  # mu_abs_mean: how far the policy's mean moved from N(0, I)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_short_run_raises_the_training_reward(ray_local, tmp_path, family):
    frozen, learned, _ = _learn(tmp_path, family)
    assert learned > frozen + 0.15, (family, frozen, learned)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_the_same_run_with_the_advantage_sign_flipped_does_not_learn(ray_local, tmp_path, monkeypatch, family):
    frozen, learned, moved = _learn(tmp_path, family, flip=True, monkeypatch=monkeypatch)
    assert not learned > frozen + 0.15, (family, frozen, learned)  # the check above would fail on this run
    # and it is a run that trained (not one that returned NaN or never moved): finite rewards, no higher than the
    # frozen model's, from a policy that moved away from N(0, I)
    assert np.isfinite(frozen) and np.isfinite(learned) and learned <= frozen + 0.02, (family, frozen, learned)
    assert moved > 0.05, (family, moved)


def test_a_seeded_mixture_sits_on_aligned_draws_and_draws_the_prompt_more_often(ray_local, tmp_path):
    """``--mixture-seed-share``: after 9 of 12 iterations of N(0, I) draws every component sits on one of them that
    the detector called aligned (rendered again, its noise gives an aligned image: the sampler is deterministic), and
    the iterations after it draw the prompt far more often than the frozen model."""
    import torch

    from find_rl.core.settings import RunSettings
    from find_rl.diffusion.sampler import DiffusionSampler
    from find_rl.evaluation.scoring import world_for
    from find_rl.run.find_run import FindRun, resolve

    h = 0.1
    run = resolve(RunSettings(prompts=[PROMPT], samples_per_prompt=32).replace(
        iterations=12, lr=0.05, threads=2, seed=0, policy_type="mixture", mixture_components=4, mean_resolution=None,
        mixture_seed_share=0.75, mixture_width=h))
    with FindRun(run, tmp_path, live_metrics=False) as fr:
        rows = list(fr.iterations(9, checkpoints=False))
        pol = fr.policy()  # just seeded: each component on one aligned draw
        rows += list(fr.iterations(checkpoints=False))
    seeding = np.mean([r.reward_mean for r in rows[:9]])  # N(0, I): the frozen model's
    seeded = np.mean([r.reward_mean for r in rows[9:]])
    assert len(rows) == 12 and all(r.mu_abs_mean == 0 for r in rows[:9]) and rows[-1].mu_abs_mean > 0.3
    assert seeded > seeding + 0.3, (seeding, seeded)
    assert torch.allclose(pol.std, torch.full_like(pol.std, h))
    draws = pol.means[0] / (1 - h * h) ** 0.5  # the aligned draws themselves
    sampler = DiffusionSampler.from_pretrained(pol.model)
    images = sampler.sample(draws, [PROMPT] * len(draws)).images
    assert world_for(pol.model).score(images, [PROMPT] * len(draws))["aligned"].all()
