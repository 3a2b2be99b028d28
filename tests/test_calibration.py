"""Dynamic reward calibration: targets, pairing of rewards with samples, normalisation, state round trip."""

import copy
import math

import pytest
import torch

from find_rl.objectives.calibration import RewardCalibrator, per_prompt_mean


def _batch(rewards_per_prompt, d=12):
    """Two prompts with fixed (mu, log_std); rewards listed per prompt, sample order interleaved."""
    rows, groups, rewards = [], [], []
    for g, rs in enumerate(rewards_per_prompt):
        for r in rs:
            mu = torch.full((d,), 0.5 * g)
            rows.append(torch.cat([mu, torch.zeros(d)]))
            groups.append(g)
            rewards.append(r)
    feat = torch.nn.functional.one_hot(torch.tensor(groups), len(rewards_per_prompt)).float()
    return torch.stack(rows), feat, torch.tensor(groups), torch.tensor(rewards)


def test_disabled_calibration_passes_rewards_through():
    cal = RewardCalibrator(latent_shape=(3, 2, 2), prompt_dim=2, enabled=False, normalize="none")
    x, f, g, r = _batch([[0.0, 1.0], [2.0, 4.0]])
    res = cal.update(dist_inputs=x, prompt_feat=f, group=g, rewards=r)
    assert torch.equal(res.advantages, r)


def test_fitted_predictor_learns_each_distributions_expected_reward():
    torch.manual_seed(0)
    cal = RewardCalibrator(latent_shape=(3, 2, 2), prompt_dim=2, normalize="none", steps=300, lr=3e-2)
    x, f, g, r = _batch([[0.0, 1.0, 0.0, 1.0], [3.0, 5.0, 3.0, 5.0]])
    res = cal.update(dist_inputs=x, prompt_feat=f, group=g, rewards=r)
    # target of g = the mean reward of each distribution: 0.5 and 4.0
    assert res.predicted[g == 0].mean().item() == pytest.approx(0.5, abs=0.05)
    assert res.predicted[g == 1].mean().item() == pytest.approx(4.0, abs=0.05)
    # each calibrated reward is its own reward minus its own distribution's prediction (pairing kept)
    assert torch.allclose(res.advantages, r - res.predicted, atol=1e-6)
    assert res.advantages[0].item() == pytest.approx(-0.5, abs=0.05)
    assert res.advantages[5].item() == pytest.approx(1.0, abs=0.05)
    assert res.fit_loss < 1e-3


def test_per_prompt_normalisation_divides_by_each_prompts_std():
    cal = RewardCalibrator(latent_shape=(3, 2, 2), prompt_dim=2, enabled=False, normalize="prompt")
    x, f, g, r = _batch([[0.0, 2.0], [10.0, 30.0]])
    res = cal.update(dist_inputs=x, prompt_feat=f, group=g, rewards=r)
    std0, std1 = torch.tensor([0.0, 2.0]).std().item(), torch.tensor([10.0, 30.0]).std().item()
    assert res.advantages.tolist() == pytest.approx([0.0, 2.0 / std0, 10.0 / std1, 30.0 / std1])


def test_state_round_trip_restores_predictor_optimizer_and_history():
    torch.manual_seed(0)
    a = RewardCalibrator(latent_shape=(3, 2, 2), prompt_dim=2, steps=5)
    x, f, g, r = _batch([[0.0, 1.0], [2.0, 3.0]])
    a.update(dist_inputs=x, prompt_feat=f, group=g, rewards=r)
    b = RewardCalibrator(latent_shape=(3, 2, 2), prompt_dim=2, steps=5)
    b.set_state(a.get_state())
    ra = a.update(dist_inputs=x, prompt_feat=f, group=g, rewards=r + 1)
    rb = b.update(dist_inputs=x, prompt_feat=f, group=g, rewards=r + 1)
    assert torch.equal(ra.advantages, rb.advantages)
    assert all(torch.equal(p, q) for p, q in zip(a.g.parameters(), b.g.parameters()))


def test_history_is_bounded_and_large_latents_are_pooled():
    cal = RewardCalibrator(latent_shape=(4, 64, 64), prompt_dim=3, steps=1, history=2)
    assert cal.g.pool_to == (16, 16)
    d = 4 * 64 * 64
    x = torch.zeros(4, 2 * d)
    for _ in range(3):
        cal.update(dist_inputs=x, prompt_feat=torch.eye(3)[[0, 0, 1, 1]], group=torch.tensor([0, 0, 1, 1]),
                   rewards=torch.tensor([0.0, 1.0, 1.0, 2.0]))
    assert len(cal.get_state()["buffer"]) == 2


def test_bad_normalize_and_per_prompt_mean():
    with pytest.raises(ValueError, match="normalize"):
        RewardCalibrator(latent_shape=(3, 2, 2), prompt_dim=2, normalize="zscore")
    import numpy as np

    m = per_prompt_mean(np.array([1.0, 0.0, 1.0]), np.array([0, 0, 2]), 3)
    assert m[0] == 0.5 and np.isnan(m[1]) and m[2] == 1.0


def test_adaptive_anchor_rises_above_target_falls_below_and_round_trips():
    import numpy as np

    from find_rl.objectives.anchor import AdaptiveAnchor

    a = AdaptiveAnchor(num_groups=3, target=0.9, init=0.01, factor=2.0, max_coeff=0.05)
    a.update(np.array([1.0, 0.5, np.nan]))
    assert a.coeffs.tolist() == pytest.approx([0.02, 0.005, 0.01])
    a.update(np.array([0.95, 0.5, np.nan]))
    a.update(np.array([0.95, 0.5, np.nan]))
    assert a.coeffs.tolist() == pytest.approx([0.05, 0.00125, 0.01])  # clipped at max_coeff
    b = AdaptiveAnchor(num_groups=3, target=0.9)
    b.set_state(a.get_state())
    assert torch.equal(a.coeffs, b.coeffs)
    with pytest.raises(ValueError, match="target"):
        AdaptiveAnchor(num_groups=1, target=1.5)


# --- the baseline ladder (issue 14): calibrated / mean / ema / none -------------------------------------------------

def _two_groups(rewards, groups, d=12):
    """Rows for ``groups`` (fixed mu per group), one-hot features over 3 prompts, float rewards."""
    group = torch.tensor(groups)
    x = torch.cat([0.5 * group[:, None].float().expand(-1, d), torch.zeros(len(groups), d)], 1)
    return dict(dist_inputs=x, prompt_feat=torch.eye(3)[group], group=group, rewards=torch.tensor(rewards))


def _cal(baseline, normalize="none", **kw):
    return RewardCalibrator(latent_shape=(3, 2, 2), prompt_dim=3, baseline=baseline, normalize=normalize, **kw)


# group 0: rewards 1, 3 (mean 2, std sqrt 2); group 1: rewards 4, 8, 6 (mean 6, std 2); interleaved
BATCH = ([1.0, 4.0, 3.0, 8.0, 6.0], [0, 1, 0, 1, 1])


@pytest.mark.parametrize("baseline, predicted, fit_loss", [
    ("mean", [2, 6, 2, 6, 6], 0.0),
    ("ema", [2, 6, 2, 6, 6], 0.0),  # first batch of both groups: their batch means
    ("none", [0, 0, 0, 0, 0], 0.4 * 2**2 + 0.6 * 6**2),  # count-weighted MSE of b = 0 against each group's mean
])
def test_each_baseline_subtracts_its_hand_computed_value(baseline, predicted, fit_loss):
    res = _cal(baseline).update(**_two_groups(*BATCH))
    assert res.predicted.tolist() == pytest.approx(predicted)
    assert res.advantages.tolist() == pytest.approx([r - p for r, p in zip(BATCH[0], predicted)])
    assert res.fit_loss == pytest.approx(fit_loss)
    normed = _cal(baseline, normalize="prompt").update(**_two_groups(*BATCH)).advantages  # then / per-prompt std
    std = [2**0.5, 2.0, 2**0.5, 2.0, 2.0]
    assert normed.tolist() == pytest.approx([(r - p) / s for r, p, s in zip(BATCH[0], predicted, std)])


def test_calibrated_baseline_is_gs_prediction_after_its_refit():
    torch.manual_seed(0)
    cal = _cal("calibrated", steps=50)
    batch = _two_groups(*BATCH)
    feats = cal.g.features(batch["dist_inputs"], batch["prompt_feat"])
    with torch.no_grad():
        before = cal.g(feats).clone()
    res = cal.update(**batch)
    with torch.no_grad():
        after = cal.g(feats)
    means = torch.tensor([2.0, 6.0, 2.0, 6.0, 6.0])  # each group's batch mean, what g regresses on
    assert torch.allclose(res.predicted, after, atol=1e-6)  # the baseline is g's output after this batch's refit
    assert (after - means).abs().mean() < 0.5 * (before - means).abs().mean()  # and the refit fitted the group means
    assert torch.allclose(res.advantages, batch["rewards"] - after, atol=1e-6)
    assert len(cal.get_state()["buffer"]) == 1 and not cal.get_state()["ema"]["groups"].numel()


def test_ema_is_updated_after_the_advantages_and_starts_at_a_new_groups_batch_mean():
    cal = _cal("ema", ema_momentum=0.5)
    cal.update(**_two_groups(*BATCH))  # EMA -> {0: 2, 1: 6}
    # batch 2: group 0 rewards 5, 7 (mean 6); group 1 reward 2; group 2 (new) rewards 10, 12 (mean 11)
    res = cal.update(**_two_groups([5.0, 2.0, 10.0, 7.0, 12.0], [0, 1, 2, 0, 2]))
    assert res.predicted.tolist() == pytest.approx([2, 6, 11, 2, 11])  # past batches only; group 2: its batch mean
    assert res.advantages.tolist() == pytest.approx([3, -4, -1, 5, 1])
    assert res.fit_loss == pytest.approx(0.4 * (2 - 6) ** 2 + 0.2 * (6 - 2) ** 2)  # group 2 predicts itself
    # EMA -> {0: 0.5 * 2 + 0.5 * 6 = 4, 1: 0.5 * 6 + 0.5 * 2 = 4, 2: 11}
    res = cal.update(**_two_groups([0.0, 4.0, 11.0], [0, 1, 2]))
    assert res.predicted.tolist() == pytest.approx([4, 4, 11])
    assert res.advantages.tolist() == pytest.approx([-4, 0, 0])


def test_ema_state_round_trip_gives_identical_advantages():
    a = _cal("ema", normalize="prompt", ema_momentum=0.7)
    a.update(**_two_groups(*BATCH))
    a.update(**_two_groups([5.0, 2.0, 7.0], [0, 1, 0]))
    b = _cal("ema", normalize="prompt", ema_momentum=0.7)
    b.set_state(copy.deepcopy(a.get_state()))
    fresh = _cal("ema", normalize="prompt", ema_momentum=0.7)
    nxt = _two_groups([0.5, 9.0, 2.5, 3.0], [0, 1, 0, 2])
    ra, rb, rf = a.update(**nxt), b.update(**nxt), fresh.update(**nxt)
    assert torch.equal(ra.advantages, rb.advantages) and torch.equal(ra.predicted, rb.predicted)
    assert not torch.equal(ra.predicted, rf.predicted)  # the restored state mattered
    later = _two_groups([1.0, 1.0], [0, 1])
    assert torch.equal(a.update(**later).advantages, b.update(**later).advantages)
    old_checkpoint = {k: v for k, v in a.get_state().items() if k != "ema"}  # from before the ema baseline
    b.set_state(old_checkpoint)
    assert b.update(**later).predicted.tolist() == [1.0, 1.0]  # no history: first-seen groups


@pytest.mark.parametrize("normalize", ["prompt", "batch", "none"])
@pytest.mark.parametrize("baseline", ["calibrated", "mean", "ema", "none"])
def test_one_sample_per_group_gives_finite_advantages(baseline, normalize):
    torch.manual_seed(0)
    cal = _cal(baseline, normalize=normalize, steps=5)
    for rewards in ([0.3, 0.9, 0.5], [0.7, 0.1, 0.2], [0.4, 0.4, 0.8]):
        res = cal.update(**_two_groups(rewards, [0, 1, 2]))
        assert torch.isfinite(res.advantages).all() and torch.isfinite(res.predicted).all() and math.isfinite(res.fit_loss)
    single = cal.update(**_two_groups([0.6], [1]))  # a batch of one sample
    assert torch.isfinite(single.advantages).all()
    if baseline == "mean":
        assert res.advantages.tolist() == [0.0, 0.0, 0.0]  # r - r: no learning signal at one sample per prompt
    if baseline == "none" and normalize == "prompt":
        assert res.advantages.tolist() == pytest.approx([0.4 / 0.05, 0.4 / 0.05, 0.8 / 0.05])  # std 0 -> the eps floor
    if baseline == "ema" and normalize == "none":
        assert res.predicted.tolist() == pytest.approx([0.9 * 0.3 + 0.1 * 0.7, 0.9 * 0.9 + 0.1 * 0.1, 0.9 * 0.5 + 0.1 * 0.2])


def test_enabled_is_an_alias_for_baseline_none_and_contradictions_raise():
    kw = dict(latent_shape=(3, 2, 2), prompt_dim=2)
    assert RewardCalibrator(**kw).baseline == "calibrated"
    assert RewardCalibrator(**kw, enabled=True).baseline == "calibrated"
    off = RewardCalibrator(**kw, enabled=False)
    assert off.baseline == "none" and not off.enabled
    assert RewardCalibrator(**kw, enabled=True, baseline="ema").baseline == "ema"
    assert RewardCalibrator(**kw, enabled=False, baseline="none").baseline == "none"
    with pytest.raises(ValueError, match="contradicts"):
        RewardCalibrator(**kw, enabled=False, baseline="mean")
    with pytest.raises(ValueError, match="contradicts"):
        RewardCalibrator(**kw, enabled=True, baseline="none")
    with pytest.raises(ValueError, match="baseline must be one of"):
        RewardCalibrator(**kw, baseline="value")
    with pytest.raises(ValueError, match="ema_momentum"):
        RewardCalibrator(**kw, baseline="ema", ema_momentum=1.0)
    x, f, g, r = _batch([[0.0, 1.0], [2.0, 4.0]])
    a = RewardCalibrator(**kw, enabled=False, normalize="none").update(dist_inputs=x, prompt_feat=f, group=g, rewards=r)
    b = RewardCalibrator(**kw, baseline="none", normalize="none").update(dist_inputs=x, prompt_feat=f, group=g, rewards=r)
    assert torch.equal(a.advantages, b.advantages) and torch.equal(a.predicted, torch.zeros(4))
