"""The mixture family (``--policy-type mixture``): its math against torch.distributions and hand formulas, its RLlib
module and distribution, its export. No Ray cluster (the learning test is in test_learning.py)."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns

from find_rl.core.settings import PolicySettings, RunSettings
from find_rl.policies import mixture as mx
from find_rl.policies.export import MixturePolicy, load_policy, save_policy
from find_rl.rllib.mixture_module import MixtureNoisePolicyModule, split_mixture_inputs

SHAPE = (3, 8, 8)
D = math.prod(SHAPE)


def _module(num_prompts=2, **settings):
    obs = gym.spaces.Box(-np.inf, np.inf, (num_prompts,), np.float32)
    act = gym.spaces.Box(-np.inf, np.inf, (D,), np.float32)
    policy = PolicySettings(**(dict(policy_type="mixture", mean_resolution=4) | settings))
    cfg = MixtureNoisePolicyModule.model_config_for(policy, num_prompts=num_prompts, latent_shape=SHAPE)
    return MixtureNoisePolicyModule(observation_space=obs, action_space=act, model_config=cfg)


def _obs(indices, num_prompts=2):
    obs = torch.zeros(len(indices), num_prompts)
    obs[torch.arange(len(indices)), torch.tensor(indices)] = 1.0
    return obs


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_initial_components_start_apart_in_symmetric_pairs_with_mean_zero(k):
    m = mx.initial_means(3, k, (3, 4, 4), 0.5)
    assert m.shape == (3, k, 3, 4, 4)
    assert torch.allclose(m.mean(1), torch.zeros(3, 3, 4, 4), atol=1e-6)  # the mixture's mean is N(0, I)'s
    rms = m.flatten(2).pow(2).mean(-1).sqrt()
    assert torch.allclose(rms[:, : 2 * (k // 2)], torch.full((3, 2 * (k // 2)), 0.5), atol=1e-5)
    if k % 2:
        assert rms[:, -1].abs().max() == 0  # an odd K keeps one component at 0
    assert torch.equal(m, mx.initial_means(3, k, (3, 4, 4), 0.5))  # the same in every process
    if k >= 2:
        assert not torch.allclose(m[:, 0], m[:, 1])


def test_log_prob_moments_and_kl_bound_against_hand_formulas():
    g = torch.Generator().manual_seed(0)
    means, log_std, z = torch.randn(4, 3, 6, generator=g), 0.2 * torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    comp = torch.stack([torch.distributions.Normal(means[:, k], log_std.exp()).log_prob(z).sum(-1) for k in range(3)], -1)
    assert torch.allclose(mx.log_prob(z, means, log_std), torch.logsumexp(comp, -1) - math.log(3), atol=1e-5)
    assert torch.allclose(mx.responsibilities(z, means, log_std), torch.softmax(comp, -1), atol=1e-5)
    mean, lstd = mx.moments(means, log_std)
    assert torch.allclose(mean, means.mean(1))
    assert torch.allclose((2 * lstd).exp(), (2 * log_std).exp() + means.var(1, unbiased=False), atol=1e-5)
    # the bound is the components' mean KL, and it bounds a Monte Carlo estimate of the mixture's KL
    kl_k = torch.stack([(0.5 * ((2 * log_std).exp() + means[:, k] ** 2 - 1) - log_std).mean(-1) for k in range(3)], -1)
    assert torch.allclose(mx.kl_bound(means, log_std), kl_k.mean(-1), atol=1e-6)
    q = mx.torch_mixture(means, log_std)
    s = q.sample((20000,))
    mc = (q.log_prob(s) - torch.distributions.Normal(0.0, 1.0).log_prob(s).sum(-1)).mean(0) / 6
    assert (mc <= mx.kl_bound(means, log_std) + 0.01).all()
    assert mx.separation(means).shape == (4,) and (mx.separation(means) > 0).all()


def test_stratified_transform_draws_every_component_equally():
    means = torch.arange(3.0).reshape(1, 3, 1).expand(2, 3, 4).clone()  # component k's mean is k everywhere
    std = torch.full((2, 4), 0.5)
    eps = torch.randn(2, 7, 4)
    out = mx.transform(means, std, eps)
    assert torch.allclose(out, torch.tensor([0, 1, 2, 0, 1, 2, 0.0])[None, :, None] + 0.5 * eps)


def test_module_starts_as_the_initial_mixture_and_its_rllib_distribution_is_exact():
    m = _module(mixture_components=4, mixture_init=0.5)
    obs = _obs([1, 0, 1])
    out = m.forward_train({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
    assert out.shape == (3, 5 * D + 4)
    means, log_std, weights = split_mixture_inputs(out, 4)
    assert torch.count_nonzero(log_std) == 0  # sigma = 1
    assert torch.allclose(weights, torch.full((3, 4), 0.25))
    assert torch.allclose(means.mean(1), torch.zeros(3, D), atol=1e-6)  # the initial mixture's mean is 0
    dist = m.get_train_action_dist_cls().from_logits(out)
    z = dist.sample()
    assert z.shape == (3, D)
    comp = torch.stack([torch.distributions.Normal(means[:, k], 1.0).log_prob(z).sum(-1) for k in range(4)], -1)
    assert torch.allclose(dist.logp(z), torch.logsumexp(comp, -1) - math.log(4), atol=1e-3)
    mu, lstd = m.summary(obs, {Columns.ACTION_DIST_INPUTS: out})
    assert mu.shape == lstd.shape == (3, D) and (lstd > 0).all()  # the components' spread widens the mixture
    assert m.calibration_inputs(obs, out).shape == (3, 2 * D)
    det = dist.to_deterministic().sample()
    assert torch.allclose(det, means[:, 0])  # the heaviest component (ties: the first)
    assert not m.weight_logits.requires_grad  # fixed weights by default


def test_the_behaviour_with_a_prior_share_records_its_exact_density():
    m = _module(mixture_components=2)
    m.prior_share = 0.3
    out = m.forward_exploration({Columns.OBS: _obs([0, 1])})[Columns.ACTION_DIST_INPUTS]
    b = m.get_exploration_action_dist_cls().from_logits(out)
    q = m.get_train_action_dist_cls().from_logits(out)
    z = torch.randn(2, D)
    prior = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    assert torch.allclose(b.logp(z), torch.logaddexp(q.logp(z) + math.log(0.7), prior + math.log(0.3)), atol=1e-3)


def test_export_round_trip_and_one_line_errors(tmp_path):
    m = _module(mixture_components=3)
    with torch.no_grad():
        m.means.add_(torch.randn_like(m.means))
    pol = m.export(_obs([0, 1]), prompts=["a", "b"], model="shapes")
    assert isinstance(pol, MixturePolicy) and pol.means.shape == (2, 3, *SHAPE) and pol.std.shape == (2, *SHAPE)
    save_policy(tmp_path / "p", pol)
    back = load_policy(tmp_path / "p")
    assert back.family == "mixture" and back.components == 3 and torch.equal(back.means, pol.means)
    eps = torch.zeros(1, 3, *SHAPE)
    assert torch.allclose(back.transform([1], eps)[0], pol.means[1])  # draw s from component s mod K
    assert back.sample("b", 5).shape == (5, *SHAPE)
    meta = (tmp_path / "p" / "noise_policy.json")
    meta.write_text(meta.read_text().replace('"components": 3', '"components": 4'))
    with pytest.raises(ValueError, match="do not match") as e:
        load_policy(tmp_path / "p")
    assert "\n" not in str(e.value)


def test_mixture_settings_belong_to_the_mixture_family():
    with pytest.raises(ValueError, match="--mixture-components is a setting of the mixture policy"):
        RunSettings().replace(mixture_components=2)
    run = RunSettings().replace(policy_type="mixture", mixture_components=2, anchor_coeff=0.01)
    assert run.policy.mixture_components == 2 and run.find.anchor_coeff == 0.01
    with pytest.raises(ValueError, match="--mixture-components must be"):
        PolicySettings(policy_type="mixture", mixture_components=0)


def test_learned_weights_keep_their_floor_and_enter_the_density():
    logits = torch.tensor([[5.0, -5.0, 0.0, 0.0]])
    w = mx.weights_from_logits(logits, 0.05)
    assert torch.allclose(w.sum(-1), torch.ones(1)) and w.min() >= 0.05 - 1e-7
    assert torch.allclose(mx.weights_from_logits(logits, None), torch.full((1, 4), 0.25))
    g = torch.Generator().manual_seed(1)
    means, log_std, z = torch.randn(1, 4, 5, generator=g), torch.zeros(1, 5), torch.randn(1, 5, generator=g)
    comp = torch.stack([torch.distributions.Normal(means[:, k], 1.0).log_prob(z).sum(-1) for k in range(4)], -1)
    assert torch.allclose(mx.log_prob(z, means, log_std, w), torch.logsumexp(comp + w.log(), -1), atol=1e-5)
    mean, lstd = mx.moments(means, log_std, w)
    assert torch.allclose(mean, (w[..., None] * means).sum(1), atol=1e-6)
    assert torch.allclose((2 * lstd).exp(), 1 + (w[..., None] * (means - mean[:, None]) ** 2).sum(1), atol=1e-5)


@pytest.mark.parametrize("samples", [7, 64, 256])
def test_systematic_draws_follow_the_learned_weights_in_every_prefix(samples):
    w = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.05, 0.05, 0.45, 0.45]])
    idx = mx.component_of(samples, 4, w)
    assert idx.shape == (2, samples)
    counts = torch.stack([(idx == k).sum(-1) for k in range(4)], -1).double()
    assert ((counts - samples * w.double()).abs() <= 0.06 * samples + 1.5).all(), counts
    means = torch.arange(4.0).reshape(1, 4, 1).expand(2, 4, 3).clone()
    out = mx.transform(means, torch.ones(2, 3), torch.zeros(2, samples, 3), w)
    assert torch.equal(out[..., 0], idx.float())


def test_learned_weights_train_and_export(tmp_path):
    m = _module(mixture_components=4, mixture_weight_floor=0.02)
    assert m.weight_logits.requires_grad
    obs = _obs([0, 1, 0])
    out = m.forward_train({Columns.OBS: obs})
    z = torch.randn(3, D)
    (-m.log_density(obs, z, out).sum()).backward()
    assert m.weight_logits.grad is not None and m.weight_logits.grad.abs().sum() > 0
    with torch.no_grad():
        m.weight_logits[0] = torch.tensor([4.0, 0.0, 0.0, -4.0])
    pol = m.export(_obs([0, 1]), prompts=["a", "b"], model="shapes")
    assert pol.weights.shape == (2, 4) and pol.weights[0, 0] > 0.8 and pol.weights[0].min() >= 0.02 - 1e-6
    save_policy(tmp_path / "p", pol)
    back = load_policy(tmp_path / "p")
    assert torch.allclose(back.weights, pol.weights)
    idx = mx.component_of(200, 4, back.weights[:1])[0]
    assert (idx == 0).float().mean() > 0.75
    with pytest.raises(ValueError, match="--mixture-weight-floor must be below 1/K = 0.25"):
        PolicySettings(policy_type="mixture", mixture_weight_floor=0.3)


# ------------------------------------------------------------------------------------------------ seeding
def test_seeded_means_draw_k_distinct_aligned_noises_scaled_to_keep_n_zero_i():
    z = torch.randn(10, D, generator=torch.Generator().manual_seed(1))
    m = mx.seeded_means(z, 4, 0.3)
    scale = math.sqrt(1 - 0.09)
    hits = [[i for i in range(10) if torch.allclose(row, scale * z[i])] for row in m]
    assert all(len(h) == 1 for h in hits) and len({h[0] for h in hits}) == 4  # 4 different aligned noises
    assert torch.equal(m, mx.seeded_means(z, 4, 0.3))  # deterministic (the same in every process)
    assert not torch.equal(m, mx.seeded_means(z, 4, 0.3, seed=1))
    few = mx.seeded_means(z[:3], 7, 0.3)  # fewer noises than components: each used in turn
    used = [next(i for i in range(3) if torch.allclose(row, scale * z[i])) for row in few]
    assert sorted(used[:3]) == [0, 1, 2] and used[3:] == used[:3] + used[:1]
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        mx.seeded_means(z, 4, 0.0)
    with pytest.raises(ValueError, match="at least one"):
        mx.seeded_means(z[:0], 4, 0.3)


def test_a_seeded_component_of_a_prior_draw_is_the_prior():
    """N(sqrt(1 - h^2) z, h^2 I) with z ~ N(0, I) is N(0, I): seeding on unselected draws would change nothing."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(20000, 4, generator=g)
    h = 0.2
    x = math.sqrt(1 - h * h) * z + h * torch.randn(20000, 4, generator=g)
    assert torch.allclose(x.mean(0), torch.zeros(4), atol=0.03) and torch.allclose(x.std(0), torch.ones(4), atol=0.03)


def test_module_seeds_each_prompt_on_its_aligned_draws_and_leaves_one_without_draws_alone():
    mod = _module(num_prompts=3, mean_resolution=None, mixture_components=4, mixture_seed_share=0.25, mixture_width=0.1)
    assert mod.seeding() == (0.25, 4)
    assert mod.means.abs().max() == 0 and mod.log_std.abs().max() == 0  # seeding starts at N(0, I) exactly
    z = torch.randn(6, D)
    mod.seed([z[:5], None, z[5:]])
    means, log_std, weights = mod.mixture(torch.tensor([0, 1, 2]))
    scale = math.sqrt(1 - 0.01)
    assert all(any(torch.allclose(means[0, k], scale * z[i], atol=1e-6) for i in range(5)) for k in range(4))
    assert means[1].abs().max() == 0 and log_std[1].abs().max() == 0  # no aligned draw: still N(0, I)
    assert torch.allclose(means[2], (scale * z[5]).expand(4, D), atol=1e-6)  # one draw: every component on it
    assert torch.allclose(log_std[[0, 2]].exp(), torch.full((2, D), 0.1))
    mod.project()  # the floor (--min-std 0.5) does not lift the seeded sigma
    assert torch.allclose(mod.mixture(torch.tensor([0]))[1].exp(), torch.full((1, D), 0.1))
    assert torch.allclose(weights, torch.full((3, 4), 0.25))


def test_seeding_settings_are_checked_in_one_line():
    with pytest.raises(ValueError, match="--mean-resolution full"):
        PolicySettings(policy_type="mixture", mixture_seed_share=0.25)
    with pytest.raises(ValueError, match="--mixture-width"):
        PolicySettings(policy_type="mixture", mean_resolution=None, mixture_seed_share=0.25, mixture_width=0.0)
    with pytest.raises(ValueError, match="--mixture-seed-share"):
        PolicySettings(policy_type="mixture", mean_resolution=None, mixture_seed_share=1.5)
    with pytest.raises(ValueError, match="--mixture-seed-share"):
        PolicySettings(policy_type="per-prompt", mixture_seed_share=0.25)


def test_the_seed_store_keeps_the_newest_aligned_draws_until_cleared_and_checkpoints_its_state():
    from find_rl.objectives.replay import RewardedReplay

    store = RewardedReplay(num_groups=2, size=3)
    z = torch.arange(10.0)[:, None].expand(10, D)
    store.add(z[:5], torch.zeros(5), torch.zeros(5, 2), torch.tensor([0, 0, 1, 0, 0]), torch.tensor([1, 1, 1, 0, 1]))
    store.add(z[5:], torch.zeros(5), torch.zeros(5, 2), torch.zeros(5, dtype=torch.long), torch.tensor([1, 1, 0, 0, 0]))
    assert store.noises(0)[:, 0].tolist() == [4.0, 5.0, 6.0] and store.noises(1)[:, 0].tolist() == [2.0]
    state = store.get_state()
    store.clear()
    assert store.noises(0) is None and store.closed
    store.add(z, torch.zeros(10), torch.zeros(10, 2), torch.zeros(10, dtype=torch.long), torch.ones(10))
    assert store.noises(0) is None  # closed: a resumed run past its seeding keeps nothing more
    fresh = RewardedReplay(num_groups=2, size=3)
    fresh.set_state(state)
    assert fresh.noises(0)[:, 0].tolist() == [4.0, 5.0, 6.0] and not fresh.closed
    fresh.set_state(store.get_state())
    assert fresh.closed
