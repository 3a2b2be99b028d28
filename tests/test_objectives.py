"""The mass-covering objectives' math (find_rl/objectives/mass_covering.py) and the behaviour mixtures (flow, Gaussian), by hand."""

import math

import numpy as np
import pytest
import torch

from find_rl.objectives import mass_covering as ob


def test_log_prior_and_mixture_density_by_hand():
    z = torch.tensor([[0.0, 0.0], [1.0, -2.0]])
    assert ob.log_prior(z).tolist() == pytest.approx([-math.log(2 * math.pi), -math.log(2 * math.pi) - 2.5])
    log_q, log_p = torch.tensor([-1.0, -7.0]), torch.tensor([-3.0, -2.0])
    mix = ob.mixture_log_prob(log_q, log_p, 0.25)
    assert mix.tolist() == pytest.approx(np.log(0.75 * np.exp([-1.0, -7.0]) + 0.25 * np.exp([-3.0, -2.0])).tolist())
    assert torch.equal(ob.mixture_log_prob(log_q, log_p, 0.0), log_q)


def test_log_variance_is_zero_exactly_at_the_tilted_target_and_estimates_log_z():
    """At q = N exp(r / beta) / Z_g the residual is -log Z_g for every sample of the prompt: zero variance."""
    reward = torch.tensor([1.0, 0.0, 0.3, 1.0, 0.0])
    group = torch.tensor([0, 0, 0, 1, 1])
    log_p = torch.tensor([-2.0, -3.0, -1.0, -4.0, -0.5])
    log_z = torch.tensor([0.7, 0.7, 0.7, -1.2, -1.2])
    log_q = log_p + reward / 0.5 - log_z
    loss, est = ob.log_variance_loss(log_q, log_p, reward, group, beta=0.5, num_groups=2)
    assert loss.item() == pytest.approx(0.0, abs=1e-10) and est.tolist() == pytest.approx(log_z.tolist())
    off = log_q.clone()
    off[1] += 1.0  # one failed sample too likely under q: the variance of prompt 0's residuals
    loss, _ = ob.log_variance_loss(off, log_p, reward, group, beta=0.5, num_groups=2)
    expected = np.var([0.0, 1.0, 0.0]) * 3 / 5  # prompt 1 contributes nothing
    assert loss.item() == pytest.approx(expected)


def test_log_variance_gradient_lowers_q_where_it_exceeds_the_target():
    log_q = torch.tensor([0.0, 0.0, 0.0], requires_grad=True)
    reward, log_p = torch.tensor([1.0, 0.0, 0.0]), torch.zeros(3)
    loss, _ = ob.log_variance_loss(log_q, log_p, reward, torch.zeros(3, dtype=torch.long), beta=1.0, num_groups=1)
    loss.backward()
    assert log_q.grad[0] < 0 < log_q.grad[1]  # raise q on the rewarded sample, lower it on the failed ones


def test_iw_mle_weights_are_self_normalised_per_prompt():
    """Weights N exp(r / beta) / b: with b = N and beta = 1, sample weights are exp(r) / sum exp(r) in each prompt."""
    log_q = torch.zeros(4, requires_grad=True)
    log_p = torch.tensor([-1.0, -2.0, -1.5, -3.0])
    reward = torch.tensor([1.0, 0.0, 2.0, 0.0])
    group = torch.tensor([0, 0, 1, 1])
    loss = ob.iw_mle_loss(log_q, log_p, log_p, reward, group, beta=1.0, num_groups=2)
    loss.backward()
    w = torch.tensor([math.e, 1.0, math.e ** 2, 1.0])
    w = w / torch.tensor([math.e + 1, math.e + 1, math.e ** 2 + 1, math.e ** 2 + 1])
    assert (-log_q.grad * 2).tolist() == pytest.approx(w.tolist())  # d loss / d log q_i = -w_i / (prompts present)


def test_effective_sample_size_between_one_over_n_and_one():
    log_p, group = torch.zeros(6), torch.tensor([0, 0, 0, 1, 1, 1])
    flat = ob.effective_sample_size(log_p, log_p, torch.zeros(6), group, beta=1.0, num_groups=3)
    assert flat[:2].tolist() == pytest.approx([1.0, 1.0]) and math.isnan(flat[2])  # prompt 2: no samples
    one = ob.effective_sample_size(log_p, log_p, torch.tensor([50.0, 0, 0, 1, 1, 1]), group, beta=1.0, num_groups=2)
    assert one[0].item() == pytest.approx(1 / 3, rel=1e-6) and one[1].item() == pytest.approx(1.0)


def test_flow_behaviour_mixture_samples_the_prior_share_and_records_its_density():
    from find_rl.policies.flow import ConditionalCouplingFlow
    from find_rl.rllib.flow_module import TorchFlowDistribution

    torch.manual_seed(0)
    flow = ConditionalCouplingFlow(latent_shape=(3, 8, 8), num_conditions=2, resolution=4)
    with torch.no_grad():
        flow.shift.weight.fill_(3.0)  # q: every block mean moved far from the prior
    cond = torch.eye(2)[torch.zeros(4000, dtype=torch.long)]
    dist = TorchFlowDistribution.get_partial_dist_cls(flow=flow, prior_share=0.25).from_logits(cond)
    z = dist.sample()
    prior_like = z.mean(1).abs() < 1.0  # a draw of q has mean ~3 per element; a prior draw ~0
    assert prior_like.float().mean().item() == pytest.approx(0.25, abs=0.03)
    log_q = flow.log_prob(z[:5], cond[:5])
    expected = torch.logaddexp(log_q + math.log(0.75), ob.log_prior(z[:5]) + math.log(0.25))
    mixed = TorchFlowDistribution.get_partial_dist_cls(flow=flow, prior_share=0.25).from_logits(cond[:5])
    assert torch.allclose(mixed.logp(z[:5]), expected, atol=1e-4)
    plain = TorchFlowDistribution.get_partial_dist_cls(flow=flow).from_logits(cond[:5])
    assert torch.allclose(plain.logp(z[:5]), log_q, atol=1e-5)


def test_gaussian_behaviour_mixture_samples_the_prior_share_and_records_its_density():
    from ray.rllib.core.distribution.torch.torch_distribution import TorchDiagGaussian

    from find_rl.rllib.noise_module import TorchDiagGaussianBehaviour

    torch.manual_seed(0)
    logits = torch.cat([torch.full((4000, 48), 3.0), torch.zeros(4000, 48)], -1)  # N(3, I): far from the prior
    z = TorchDiagGaussianBehaviour.get_partial_dist_cls(prior_share=0.25).from_logits(logits).sample()
    assert (z.mean(1).abs() < 1.0).float().mean().item() == pytest.approx(0.25, abs=0.03)
    log_q = TorchDiagGaussian.from_logits(logits[:5]).logp(z[:5])
    expected = torch.logaddexp(log_q + math.log(0.75), ob.log_prior(z[:5]) + math.log(0.25))
    mixed = TorchDiagGaussianBehaviour.get_partial_dist_cls(prior_share=0.25).from_logits(logits[:5])
    assert torch.allclose(mixed.logp(z[:5]), expected, atol=1e-4)
    assert not torch.allclose(log_q, expected, atol=1e-2)


def test_annealed_beta_is_geometric_from_beta_to_beta_final():
    assert ob.annealed_beta(0.1, None, 5, 10) == 0.1  # no schedule: constant
    assert ob.annealed_beta(0.1, 0.001, 0, 3) == pytest.approx(0.1)
    assert ob.annealed_beta(0.1, 0.001, 1, 3) == pytest.approx(0.01)  # the geometric midpoint
    assert ob.annealed_beta(0.1, 0.001, 2, 3) == pytest.approx(0.001)
    assert ob.annealed_beta(0.1, 0.001, 7, 3) == pytest.approx(0.001)  # past the end (a run extended on resume): the last
