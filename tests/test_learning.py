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
