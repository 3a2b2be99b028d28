"""The coupling-flow noise policy: exact density, invertibility, identity at init, the reverse-KL estimate, the RLlib
module and distribution, and a small learning test on a toy one-step bandit (plain torch, no Ray cluster)."""

import copy
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ray.rllib.core.columns import Columns

from find_rl.policies.flow import BlockView, ConditionalCouplingFlow, replay_weights, reverse_kl
from find_rl.core.settings import PolicySettings
from find_rl.rllib.flow_module import FlowNoisePolicyModule, TorchFlowDistribution
from find_rl.policies.flow_spline import rq_spline


def _std_normal_logp(z: torch.Tensor) -> torch.Tensor:
    return torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)


def _perturb(flow: torch.nn.Module, scale: float, seed: int = 0) -> None:
    """Random values in every parameter, the zero-initialised last layers included."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))


SMALL = [dict(latent_shape=(2, 4, 4), resolution=2), dict(latent_shape=(2, 4, 4), resolution=None),
         dict(latent_shape=(2, 2, 4, 4), resolution=2)]  # block means, full resolution, a video latent (frames folded)


@pytest.mark.parametrize("coupling", ["affine", "spline"])
@pytest.mark.parametrize("shape", SMALL)
def test_log_density_matches_numerical_jacobian(coupling, shape):
    torch.manual_seed(0)
    flow = ConditionalCouplingFlow(num_conditions=3, num_blocks=4, hidden=8, coupling=coupling, **shape).double()
    _perturb(flow, 0.15)
    cond = torch.tensor([2])
    for _ in range(3):
        u = torch.randn(flow.dim, dtype=torch.float64)
        jac = torch.autograd.functional.jacobian(lambda v: flow(v[None], cond)[0][0], u)
        sign, logabsdet = torch.linalg.slogdet(jac)
        z, logdet = flow(u[None], cond)
        assert sign.item() > 0  # couplings are orientation-preserving
        assert logdet.item() == pytest.approx(logabsdet.item(), rel=1e-7, abs=1e-8)
        assert flow.log_prob(z, cond).item() == pytest.approx((_std_normal_logp(u) - logabsdet).item(), rel=1e-7, abs=1e-8)
        assert (z[0] - u).abs().max().item() > 0.1  # the test is not trivially passed by an identity


@pytest.mark.parametrize("coupling", ["affine", "spline"])
def test_inverse_round_trip_and_sample_logp(coupling):
    torch.manual_seed(1)
    flow = ConditionalCouplingFlow(latent_shape=(3, 16, 16), num_conditions=4, coupling=coupling).double()
    _perturb(flow, 0.1)
    cond = torch.tensor([0, 3, 1])
    u = torch.randn(3, flow.dim, dtype=torch.float64)
    z, logdet = flow(u, cond)
    u2, logdet_inv = flow.inverse(z, cond)
    assert torch.allclose(u2, u, atol=1e-9) and torch.allclose(logdet, -logdet_inv, atol=1e-9)
    assert (z - u).abs().max() > 0.1
    z_s, logp_s = flow.sample(cond, 5, generator=torch.Generator().manual_seed(0))
    assert z_s.shape == (15, 768)
    assert torch.allclose(logp_s, flow.log_prob(z_s, cond.repeat_interleave(5)), atol=1e-8)


@pytest.mark.parametrize("coupling", ["affine", "spline"])
@pytest.mark.parametrize("resolution", [4, None])
def test_identity_at_initialisation(coupling, resolution):
    flow = ConditionalCouplingFlow(latent_shape=(3, 16, 16), num_conditions=6, resolution=resolution, coupling=coupling)
    z, logp = flow.sample(torch.tensor([0, 5]), 4, generator=torch.Generator().manual_seed(7))
    u = torch.randn(8, 768, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(z, u, atol=1e-5)  # a sample equals its base noise
    assert torch.allclose(logp, _std_normal_logp(z), atol=1e-3)
    assert torch.allclose(flow.log_prob(z, torch.tensor([0, 0, 0, 0, 5, 5, 5, 5])), _std_normal_logp(z), atol=1e-3)
    assert reverse_kl(flow, torch.arange(6), 16).abs().max().item() < 1e-4
    assert torch.allclose(flow.mode(torch.tensor([3])), torch.zeros(1, 768))


def test_block_view_is_orthonormal():
    view = BlockView((3, 16, 16), 4)
    z = torch.randn(5, 768)
    y, r = view.split(z)
    assert y.shape == (5, 3, 4, 4) and view.flow_dim == 48
    assert torch.allclose(y, 4 * F.avg_pool2d(z.reshape(5, 3, 16, 16), 4), atol=1e-5)  # sqrt(16) x block mean
    assert torch.allclose(z.pow(2).sum(1), y.flatten(1).pow(2).sum(1) + r.pow(2).sum(1), rtol=1e-5)
    y2, r2 = view.split(view.lift(y))  # B^T B = I, and the rest is orthogonal to B
    assert torch.allclose(y2, y, atol=1e-5) and r2.abs().max() < 1e-5
    assert view.split(r)[0].abs().max() < 1e-5
    assert BlockView((4, 64, 64), 4).flow_dim == 64 and BlockView((4, 64, 64), None).flow_dim == 16384


def _gaussian_flow(seed: int) -> tuple[ConditionalCouplingFlow, torch.Tensor, torch.Tensor]:
    """A flow whose coupling nets output constants (zero output weights, random output biases): an elementwise affine
    map of u_y, i.e. a Gaussian. Returns it with (mu, sigma) in flow coordinates for condition 1, computed by hand."""
    flow = ConditionalCouplingFlow(latent_shape=(2, 4, 4), num_conditions=2, resolution=2, num_blocks=4, hidden=8).double()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in flow.blocks:
            block.out.bias.copy_(0.4 * torch.randn(block.out.bias.shape, generator=gen, dtype=torch.float64))
        flow.shift.weight.copy_(0.5 * torch.randn(flow.shift.weight.shape, generator=gen, dtype=torch.float64))
        flow.log_scale.weight.copy_(0.3 * torch.randn(flow.log_scale.weight.shape, generator=gen, dtype=torch.float64))
    mu, sigma, s_max = torch.zeros(2, 2, 2, dtype=torch.float64), torch.ones(2, 2, 2, dtype=torch.float64), 2.0
    for block in flow.blocks:
        free = 1.0 - block.mask[0]
        s_raw, t = block.out.bias.reshape(2, 2)[0], block.out.bias.reshape(2, 2)[1]  # out channels: (param, channel)
        s = (s_max * torch.tanh(s_raw / s_max))[:, None, None] * free
        mu, sigma = mu * torch.exp(s) + t[:, None, None] * free, sigma * torch.exp(s)
    a = (s_max * torch.tanh(flow.log_scale.weight[:, 1] / s_max)).reshape(2, 2, 2)
    mu, sigma = mu * torch.exp(a) + 2.0 * flow.shift.weight[:, 1].reshape(2, 2, 2), sigma * torch.exp(a)  # 2 = sqrt(2 x 2)
    return flow, mu.flatten(), sigma.flatten()


def test_gaussian_flow_matches_torch_distribution_and_closed_form_kl():
    flow, mu, sigma = _gaussian_flow(seed=3)
    view, cond = flow.view, torch.tensor([1])
    basis = view.lift(torch.eye(view.flow_dim, dtype=torch.float64).reshape(-1, *view.shape)).T  # (D, flow_dim), B
    cov = basis @ torch.diag(sigma**2) @ basis.T + torch.eye(view.dim, dtype=torch.float64) - basis @ basis.T
    gauss = torch.distributions.MultivariateNormal(basis @ mu, covariance_matrix=cov)
    z = gauss.sample((6,))
    assert torch.allclose(flow.log_prob(z, cond.expand(6)), gauss.log_prob(z), atol=1e-8)
    analytic = (0.5 * (sigma**2 + mu**2 - 1.0) - torch.log(sigma)).sum()
    assert analytic > 0.5
    draws = 20000
    est = reverse_kl(flow, cond, draws, generator=torch.Generator().manual_seed(0))
    per_draw = torch.stack([reverse_kl(flow, cond, 1, generator=torch.Generator().manual_seed(i)) for i in range(200)])
    stderr = per_draw.std() / math.sqrt(draws)
    assert abs(est.item() - analytic.item()) < 4 * stderr.item() + 1e-6
    ent = TorchFlowDistribution(logits=F.one_hot(torch.tensor([1]), 2).double(), flow=flow).entropy()  # log-det is constant
    assert ent.item() == pytest.approx(gauss.entropy().item(), abs=1e-8)


def test_conditioning_forms_and_errors():
    torch.manual_seed(0)
    flow = ConditionalCouplingFlow(latent_shape=(3, 16, 16), num_conditions=3)
    _perturb(flow, 0.05)
    z = torch.randn(3, 768)
    by_index = flow.log_prob(z, torch.tensor([0, 1, 2]))
    assert torch.allclose(by_index, flow.log_prob(z, torch.eye(3)))
    assert not torch.allclose(by_index, flow.log_prob(z, torch.tensor([1, 1, 1])))  # prompts get different densities
    amortised = ConditionalCouplingFlow(latent_shape=(3, 16, 16), embed_dim=5)
    _perturb(amortised, 0.05)
    e = torch.randn(2, 5)
    assert torch.allclose(amortised.log_prob(z[:2], e), amortised.log_prob(z[:2], 3.0 * e + 1.0), atol=1e-4)  # layer norm
    with pytest.raises(ValueError, match="exactly one"):
        ConditionalCouplingFlow(latent_shape=(3, 16, 16), num_conditions=3, embed_dim=5)
    with pytest.raises(ValueError, match="per-prompt"):
        amortised.log_prob(z[:2], torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="features"):
        flow.log_prob(z[:2], torch.randn(2, 4))
    with pytest.raises(ValueError, match="divide"):
        ConditionalCouplingFlow(latent_shape=(3, 16, 16), num_conditions=3, resolution=5)
    with pytest.raises(ValueError, match="empty"):
        ConditionalCouplingFlow(latent_shape=(1, 4, 4), num_conditions=3, masks=("channel",))
    with pytest.raises(ValueError, match="coupling"):
        ConditionalCouplingFlow(latent_shape=(3, 16, 16), num_conditions=3, coupling="neural")


def test_spline_is_identity_at_zero_and_monotone():
    x = torch.linspace(-5, 5, 401, dtype=torch.float64)
    zeros = torch.zeros(401, 8, dtype=torch.float64)
    y, logdet = rq_spline(x, zeros, zeros, zeros[:, :-1])
    assert torch.allclose(y, x, atol=1e-12) and logdet.abs().max() < 1e-12
    gen = torch.Generator().manual_seed(0)
    w, h, d = (2 * torch.randn(8, generator=gen, dtype=torch.float64).expand(401, 8) for _ in range(3))
    y, _ = rq_spline(x, w, h, d[:, :-1])
    assert (y.diff() > 0).all() and (y - x).abs().max() > 0.1


def test_param_groups_and_config_cover_the_flow():
    flow = ConditionalCouplingFlow(latent_shape=(3, 16, 16), num_conditions=6, coupling="spline")
    groups = flow.param_groups()
    ids = [id(p) for ps in groups.values() for p in ps]
    assert sorted(ids) == sorted(id(p) for p in flow.parameters()) and len(ids) == len(set(ids))
    rebuilt = ConditionalCouplingFlow(**flow.config())
    rebuilt.load_state_dict(flow.state_dict())  # same architecture from the JSON-safe config


def test_replay_weights_reweight_toward_the_prior():
    z = torch.randn(6, 10)
    prior_logp = _std_normal_logp(z)
    w = replay_weights(z, prior_logp, torch.tensor([0, 0, 0, 1, 1, 1]))  # drawn from the prior itself: all equal
    assert torch.allclose(w, torch.ones(6))
    w = replay_weights(z, prior_logp + torch.tensor([0.0, math.log(2), 0, 0, 0, 0]), torch.zeros(6, dtype=torch.long))
    assert w[1].item() == pytest.approx(w[0].item() / 2, rel=1e-5) and w.mean().item() == pytest.approx(1.0, rel=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# RLlib module and distribution


def _module(latent_shape=(3, 16, 16), prior_share=0.0, **settings) -> FlowNoisePolicyModule:
    """The module as the run builds it: model_config from typed PolicySettings (flow family)."""
    obs = gym.spaces.Box(-np.inf, np.inf, (3 + 64,), np.float32)
    act = gym.spaces.Box(-np.inf, np.inf, (768,), np.float32)
    policy = PolicySettings(policy_type="flow", **settings)
    return FlowNoisePolicyModule(observation_space=obs, action_space=act, model_config=FlowNoisePolicyModule.model_config_for(
        policy, num_prompts=3, latent_shape=latent_shape, prior_share=prior_share))


def _obs(index: list[int]) -> torch.Tensor:
    obs = torch.zeros(len(index), 67)
    obs[torch.arange(len(index)), torch.tensor(index)] = 1.0
    obs[:, 3:] = torch.randn(len(index), 64)
    return obs


@pytest.mark.parametrize("cfg", [dict(), dict(flow_conditioning="embedding", flow_coupling="spline", mean_resolution=None)])
def test_module_distribution_sample_and_logp_match_the_flow(cfg):
    torch.manual_seed(0)
    m = _module(**cfg)
    _perturb(m.flow, 0.05)
    obs = _obs([2, 0, 1, 2])
    out = m.forward_exploration({Columns.OBS: obs})
    cond = out[Columns.ACTION_DIST_INPUTS]
    assert torch.equal(cond, obs[:, :3] if not cfg else obs[:, 3:])
    dist = m.get_exploration_action_dist_cls().from_logits(cond)
    assert isinstance(dist, TorchFlowDistribution)
    z = dist.sample()
    assert z.shape == (4, 768) and not z.requires_grad
    assert torch.allclose(dist.logp(z), m.flow.log_prob(z, cond), atol=1e-4)
    assert torch.allclose(m.log_prob(obs, z), dist.logp(z), atol=1e-4)
    logp = m.get_train_action_dist_cls().from_logits(m.forward_train({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]).logp(z)
    logp.sum().backward()  # the learner's logp reaches the flow's parameters
    assert m.flow.shift.weight.grad.abs().sum() > 0
    det = m.get_inference_action_dist_cls().from_logits(cond).to_deterministic()
    assert torch.allclose(det.sample(), m.flow.mode(cond)) and isinstance(det, TorchFlowDistribution)
    assert dist.kl(dist).abs().max() < 1e-3
    assert dist.entropy().shape == (4,)


def test_get_actions_connector_records_exact_logp_and_checkpoint_round_trip(tmp_path):
    from ray.rllib.connectors.module_to_env.get_actions import GetActions
    from ray.rllib.core.rl_module.rl_module import RLModule
    from ray.rllib.env.single_agent_episode import SingleAgentEpisode

    torch.manual_seed(0)
    m = _module(flow_coupling="spline")
    _perturb(m.flow, 0.05)
    obs = _obs([0, 1, 2])
    batch = GetActions()(rl_module=m, batch=m.forward_exploration({Columns.OBS: obs}), episodes=[SingleAgentEpisode()],
                         explore=True)
    actions, logp = batch[Columns.ACTIONS], batch[Columns.ACTION_LOGP]
    assert torch.allclose(logp, m.log_prob(obs, actions), atol=1e-4)
    m.save_to_path(tmp_path / "module")
    restored = RLModule.from_checkpoint(tmp_path / "module")
    assert isinstance(restored, FlowNoisePolicyModule)
    assert torch.allclose(restored.log_prob(obs, actions), logp, atol=1e-4)
    twin = copy.deepcopy(m)  # a copy's distribution class is bound to the copy's own flow
    _perturb(twin.flow, 0.05, seed=1)
    cond = obs[:, :3]
    assert torch.allclose(m.get_train_action_dist_cls().from_logits(cond).logp(actions), logp, atol=1e-4)
    assert not torch.allclose(twin.get_train_action_dist_cls().from_logits(cond).logp(actions), logp, atol=1e-2)


def test_module_helpers_for_the_learner():
    torch.manual_seed(0)
    m = _module()
    obs = _obs([0, 1, 2, 0])
    assert m.reverse_kl(obs, n=4).abs().item() < 1e-4  # exactly N(0, I) at initialisation
    mu, log_std = m.moment_summary(obs, n=256)
    assert mu.shape == log_std.shape == (4, 768) and mu.abs().mean() < 0.1 and log_std.abs().mean() < 0.1
    _perturb(m.flow, 0.05)
    kl = m.reverse_kl(obs, n=4)
    kl.backward()
    assert kl.item() > 0 and all(p.grad is not None for _, ps, _ in m.optimizer_param_groups() for p in ps if p.requires_grad)
    mu, _ = m.moment_summary(obs, n=64)
    assert torch.equal(mu[0], mu[3]) and not torch.equal(mu[0], mu[1])  # one summary per prompt, deterministic
    with pytest.raises(ValueError, match="latent_shape"):
        _module(latent_shape=[4, 8, 8])
    with pytest.raises(ValueError, match="--flow-conditioning"):
        _module(flow_conditioning="text")


# ---------------------------------------------------------------------------------------------------------------------
# Learning on a toy one-step bandit (plain torch)

THRESHOLD = 2.3  # reward 1 when some block mean of the prompt's channel exceeds it: ~4% of the prior's mass


def _toy_reward(z: torch.Tensor, prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Latent (2, 8, 8), prompt c rewards channel c: 1 iff one of its four 4x4-block coordinates exceeds THRESHOLD.
    Also returns the block coordinates of that channel ``(N, 4)`` (the low-frequency projection)."""
    y = F.avg_pool2d(z.reshape(len(z), 2, 8, 8), 4).flatten(2) * 4.0
    ch = y[torch.arange(len(z)), prompt]
    return (ch.max(1).values > THRESHOLD).float(), ch


def _train_toy(sign: float, *, iterations: int = 40, n: int = 64, beta: float = 0.1, seed: int = 0):
    torch.manual_seed(seed)
    flow = ConditionalCouplingFlow(latent_shape=(2, 8, 8), num_conditions=2, resolution=2, num_blocks=2, hidden=8)
    groups = flow.param_groups()
    opt = torch.optim.Adam([{"params": groups["affine"], "lr": 0.05},
                            {"params": groups["couplings"] + groups["context"], "lr": 0.003}])
    prompts, dim = torch.arange(2).repeat_interleave(n), flow.dim
    for _ in range(iterations):
        with torch.no_grad():
            z, logp_old = flow.sample(torch.arange(2), n)
        r = _toy_reward(z, prompts)[0].reshape(2, n)
        adv = sign * ((r - r.mean(1, keepdim=True)) / r.std(1, keepdim=True).clamp(min=0.05)).flatten()  # batch-mean baseline
        for _ in range(4):  # PPO epochs on the per-element log-ratio, plus the per-element reverse KL
            ratio = torch.exp(((flow.log_prob(z, prompts) - logp_old) / dim).clamp(-20, 20))
            surrogate = -torch.min(ratio * adv, ratio.clamp(0.8, 1.2) * adv).mean()
            loss = surrogate + beta * reverse_kl(flow, torch.arange(2), 16).mean() / dim
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        z, _ = flow.sample(torch.arange(2), 2000, generator=torch.Generator().manual_seed(1))
        r, ch = _toy_reward(z, torch.arange(2).repeat_interleave(2000))
    return r.mean().item(), ch[r > 0], reverse_kl(flow, torch.arange(2), 2000).mean().item()


def _mean_pairwise_distance(x: torch.Tensor) -> float:
    x = x[:500]
    return torch.cdist(x, x).sum().item() / (len(x) * (len(x) - 1))


def test_flow_learns_toy_bandit_and_keeps_spread_among_rewarded_samples():
    prior = torch.randn(40000, 128, generator=torch.Generator().manual_seed(2))
    r0, ch0 = _toy_reward(prior, torch.zeros(40000, dtype=torch.long))
    base_rate, base_spread = r0.mean().item(), _mean_pairwise_distance(ch0[r0 > 0])
    assert 0.02 < base_rate < 0.07

    rate, rewarded, kl = _train_toy(+1.0)
    assert rate > 0.5 and rate > 8 * base_rate  # learns clearly
    assert _mean_pairwise_distance(rewarded) > 0.4 * base_spread  # rewarded samples stay spread out (no collapse)
    assert 0 < kl < 20  # beta bounds the KL to the prior (about 79 nats with beta = 0 on this toy)

    flipped_rate, _, _ = _train_toy(-1.0)  # the same loop pushed the wrong way cannot raise the reward
    assert flipped_rate < base_rate


def test_rewarded_replay_keeps_the_newest_rewarded_noises_per_prompt():
    from find_rl.objectives.replay import RewardedReplay

    r = RewardedReplay(num_groups=2, size=3)
    assert r.tensors() is None and len(r) == 0
    z = torch.arange(12.0).reshape(6, 2)
    group = torch.tensor([0, 0, 1, 0, 0, 1])
    r.add(z, -z.sum(1), torch.eye(2)[group], group, torch.tensor([1, 1, 0, 1, 1, 1]))
    zs, logp, obs, g = r.tensors()
    assert g.tolist() == [0, 0, 0, 1] and zs[:, 0].tolist() == [2.0, 6.0, 8.0, 10.0]  # prompt 0 keeps its newest 3
    assert torch.equal(logp, -zs.sum(1)) and torch.equal(obs.argmax(1), g)
    copy = RewardedReplay(num_groups=2, size=3)
    copy.set_state(r.get_state())
    assert all(torch.equal(a, b) for a, b in zip(copy.tensors(), r.tensors()))
