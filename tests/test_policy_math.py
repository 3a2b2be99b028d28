"""Hand-computed values for FIND's policy math (pure torch, milliseconds)."""

import math

import pytest
import torch

from find_rl.policies import policy_math as pm


def test_mean_log_density_matches_hand_value():
    z = torch.tensor([[0.0, 1.0]])
    mu = torch.tensor([[0.0, 0.0]])
    log_std = torch.tensor([[0.0, math.log(2.0)]])
    # element 1: -0.5*0 - 0 - c ; element 2: -0.5*(1/2)^2 - ln 2 - c ; c = 0.5 ln(2 pi)
    expected = (-0.9189385332 + (-0.125 - 0.6931471806 - 0.9189385332)) / 2  # by hand, 0.5 ln(2 pi) = 0.9189...
    assert pm.mean_log_density(z, mu, log_std).item() == pytest.approx(expected, abs=1e-6)


def test_mean_log_density_is_torch_normal_mean():
    g = torch.Generator().manual_seed(0)
    z, mu, ls = (torch.randn(5, 768, generator=g) for _ in range(3))
    ref = torch.distributions.Normal(mu, ls.exp()).log_prob(z).mean(-1)
    assert torch.allclose(pm.mean_log_density(z, mu, ls), ref, atol=1e-5)


def test_per_element_ratio_of_uniform_mean_shift():
    # z = 0 sampled at N(0,1); new policy N(delta, 1): per-element log ratio = -delta^2/2
    d, delta = 16384, 0.05
    z = torch.zeros(1, d)
    new = pm.mean_log_density(z, torch.full((1, d), delta), torch.zeros(1, d))
    old = pm.mean_log_density(z, torch.zeros(1, d), torch.zeros(1, d))
    r = torch.exp(pm.log_ratio(new, old))
    assert r.item() == pytest.approx(math.exp(-(delta**2) / 2), rel=1e-5)
    # the joint (summed) ratio of the same move underflows to ~0, which is why the mean is used
    assert math.exp(d * (-(delta**2) / 2)) < 1e-8


def test_log_ratio_is_bounded_before_exp():
    assert pm.log_ratio(torch.tensor([1e4]), torch.tensor([0.0])).item() == 20.0


@pytest.mark.parametrize(
    "ratio, adv, expected",
    [
        (1.5, 1.0, -1.2),  # positive advantage: gain capped at 1 + eps
        (0.5, 1.0, -0.5),  # positive advantage, ratio fell: unclipped (pessimistic) term
        (1.5, -1.0, 1.5),  # negative advantage, ratio grew: unclipped term (no cap on the penalty)
        (0.5, -1.0, 0.8),  # negative advantage, ratio fell: clipped at 1 - eps
        (1.0, -1.0, 1.0),  # TRL's hand value: advantage -1, ratio 1 -> loss 1
    ],
)
def test_ppo_clipped_surrogate_both_signs(ratio, adv, expected):
    loss = pm.clipped_surrogate(torch.tensor([ratio]), torch.tensor([adv]), 0.2, mode="ppo")
    assert loss.item() == pytest.approx(expected)


def test_clamp_only_surrogate_differs_from_ppo_for_negative_advantage():
    ratio, adv = torch.tensor([1.5], requires_grad=True), torch.tensor([-1.0])
    clamp = pm.clipped_surrogate(ratio, adv, 0.2, mode="clamp")
    assert clamp.item() == pytest.approx(1.2)
    clamp.backward()
    assert ratio.grad.item() == 0.0  # the released code cannot pull an overshooting ratio back
    ratio.grad = None
    pm.clipped_surrogate(ratio, adv, 0.2, mode="ppo").backward()
    assert ratio.grad.item() == pytest.approx(1.0)


def test_no_clipping_and_bad_clip_param():
    r, a = torch.tensor([3.0]), torch.tensor([2.0])
    assert pm.clipped_surrogate(r, a, None).item() == -6.0
    assert pm.clipped_surrogate(r, a, math.inf).item() == -6.0
    with pytest.raises(ValueError, match="clip_param must be > 0"):
        pm.clipped_surrogate(r, a, 0.0)
    with pytest.raises(ValueError, match="'ppo' or 'clamp'"):
        pm.clipped_surrogate(r, a, 0.2, mode="other")


def test_clip_fraction_and_approx_kl():
    r = torch.tensor([1.0, 1.3, 0.7, 1.1])
    assert pm.clip_fraction(r, 0.2).item() == pytest.approx(0.5)
    assert pm.approx_kl(torch.zeros(3)).item() == 0.0


def test_approx_kl_estimates_the_per_element_kl_of_a_real_move():
    # behaviour N(0, 1), new N(0.5, 1) per element: KL(b || new) = 0.5^2 / 2 = 0.125 per element
    g = torch.Generator().manual_seed(0)
    d = 768
    z = torch.randn(512, d, generator=g)
    new = pm.mean_log_density(z, torch.full((1, d), 0.5), torch.zeros(1, d))
    old = pm.mean_log_density(z, torch.zeros(1, d), torch.zeros(1, d))
    log_r = pm.log_ratio(new, old)
    assert pm.approx_kl(log_r).item() == pytest.approx(0.125, abs=0.005)
    assert (torch.exp(log_r) < 1).float().mean() > 0.99  # in high dimension the ratios fall below 1


def test_analytic_kl_to_standard_normal():
    mu = torch.tensor([[1.0, 0.0]])
    ls = torch.tensor([[0.0, math.log(2.0)]])
    # element 1: (1 + 1 - 1)/2 - 0 = 0.5 ; element 2: (4 + 0 - 1)/2 - ln 2
    expected = (0.5 + 1.5 - math.log(2.0)) / 2
    assert pm.kl_to_standard_normal(mu, ls).item() == pytest.approx(expected)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mu, ls.exp()), torch.distributions.Normal(0.0, 1.0))
    assert pm.kl_to_standard_normal(mu, ls).item() == pytest.approx(ref.mean().item())
    assert pm.kl_to_standard_normal(torch.zeros(1, 4), torch.zeros(1, 4)).item() == 0.0


def test_l2_anchor_and_entropy():
    assert pm.l2_anchor(torch.tensor([[2.0]]), torch.tensor([[math.log(3.0)]])).item() == pytest.approx(4.0 + 4.0)
    assert pm.entropy_per_element(torch.zeros(1, 3)).item() == pytest.approx(0.5 + 0.5 * math.log(2 * math.pi))
