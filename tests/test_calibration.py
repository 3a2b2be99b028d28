"""Dynamic reward calibration: targets, pairing of rewards with samples, normalisation, state round trip."""

import pytest
import torch

from find_rl.calibration import RewardCalibrator, per_prompt_mean


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

    from find_rl.anchor import AdaptiveAnchor

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
