"""Baselines and the amortised policy: hand-computed values, no Ray."""

import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from find_rl.amortized import AmortizedNoiseNet
from find_rl.baselines.best_of_n import select_best
from find_rl.baselines.cem import CEMSettings, cem_update
from find_rl.baselines.ddpo import DDPOSettings, ddim_step_with_logprob, ddpo_loss, per_prompt_advantages
from find_rl.baselines.paper_loop import PaperLoopSettings, paper_loss


def test_select_best_picks_each_images_best_candidate_first_on_ties():
    scores = np.array([0.1, 0.9, 0.3, 1.0, 1.0, 0.2])  # 2 images x 3 candidates
    assert select_best(scores, 3).tolist() == [1, 3]


def test_cem_update_moves_toward_the_elite_mean():
    s = CEMSettings(population=4, elite_frac=0.5, smoothing=0.5)
    samples = torch.tensor([[0.0, 0.0], [2.0, 4.0], [4.0, 0.0], [-8.0, 8.0]])
    scores = np.array([0.1, 0.9, 0.7, 0.0])
    mean, std = cem_update(torch.zeros(2), torch.ones(2), samples, scores, s, rng=np.random.default_rng(0))
    assert torch.allclose(mean, torch.tensor([1.5, 1.0]))  # 0.5 * 0 + 0.5 * mean([2, 4], [4, 0])
    assert torch.equal(std, torch.ones(2))  # sigma stays 1 unless learn_std


def test_cem_update_learned_std_is_floored():
    s = CEMSettings(population=4, elite_frac=0.5, smoothing=1.0, learn_std=True, min_std=0.5)
    samples = torch.tensor([[1.0], [1.0], [5.0], [0.0]])
    _, std = cem_update(torch.zeros(1), torch.ones(1), samples, np.array([1.0, 1.0, 0.0, 0.0]), s, rng=np.random.default_rng(0))
    assert std.item() == pytest.approx(0.5)  # elites' std is 0 -> floor


def test_cem_breaks_ties_at_random():
    s = CEMSettings(population=4, elite_frac=0.25, smoothing=1.0)
    samples = torch.arange(4.0)[:, None]
    picks = {cem_update(torch.zeros(1), torch.ones(1), samples, np.ones(4), s, rng=np.random.default_rng(k))[0].item()
             for k in range(20)}
    assert len(picks) > 1


def test_paper_loss_matches_hand_computation_and_clamp_stops_the_reward_gradient():
    s = PaperLoopSettings()
    z = torch.tensor([[0.5, -1.0]])
    mu = torch.zeros(1, 2, requires_grad=True)
    log_std = torch.zeros(1, 2, requires_grad=True)
    loss = paper_loss(z, mu, log_std, torch.tensor([0.3]), s)  # at N(0, I): ratio 1, anchor 0
    assert loss.item() == pytest.approx(-10 * 0.3)
    loss.backward()
    # d ratio / d mu_j = ratio * (z_j - mu_j) / D  ->  d loss / d mu = -10 * 0.3 * z / 2
    assert torch.allclose(mu.grad, torch.tensor([[-10 * 0.3 * 0.25, -10 * 0.3 * -0.5]]))
    far = torch.full((1, 2), 3.0, requires_grad=True)  # ratio far above 1.2: the reward term is clamped
    paper_loss(z, far, torch.zeros(1, 2), torch.tensor([1.0]), s).backward()
    assert torch.allclose(far.grad, 0.01 * 2 * far.detach() / 2)  # only the L2 anchor's gradient remains


def _scheduler(steps=10):
    sch = DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="sample",
                        clip_sample=True, set_alpha_to_one=False)
    sch.set_timesteps(steps)
    return sch


def test_ddim_step_with_logprob_is_diffusers_step_plus_its_gaussian_density():
    sch = _scheduler()
    t = sch.timesteps[3]
    x, x0 = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4).clamp(-1, 1)
    noise = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    prev, logp = ddim_step_with_logprob(sch, x0, t, x, eta=1.0, generator=torch.Generator().manual_seed(1))
    expect = sch.step(x0, t, x, eta=1.0, variance_noise=noise).prev_sample
    assert torch.allclose(prev, expect, atol=1e-6)
    std = (sch._get_variance(int(t), int(t) - 100)).sqrt()
    mean = sch.step(x0, t, x, eta=1.0, variance_noise=torch.zeros_like(x)).prev_sample
    hand = torch.distributions.Normal(mean, std).log_prob(prev).flatten(1).mean(1)
    assert torch.allclose(logp, hand, atol=1e-5)
    _, again = ddim_step_with_logprob(sch, x0, t, x, eta=1.0, prev_sample=prev)  # re-scoring a recorded step
    assert torch.allclose(again, logp)


def test_ddpo_loss_clips_both_signs():
    old = torch.zeros(2)
    new = torch.tensor([0.5, 0.5])  # ratio e^0.5, far outside 1 +- 1e-4
    adv = torch.tensor([1.0, -1.0])
    r = math.exp(0.5)
    # A > 0: max(-r, -(1 + eps)) = -(1 + eps);  A < 0: max(r, 1 + eps) = r
    assert ddpo_loss(new, old, adv, 1e-4).item() == pytest.approx(((-(1 + 1e-4)) + r) / 2, rel=1e-6)


def test_per_prompt_advantages_normalise_within_each_prompt_and_clip():
    r = np.array([0.0, 1.0, 5.0, 5.0, 5.0, 6.0], dtype=np.float32)
    ids = np.array([0, 0, 1, 1, 1, 1])
    adv = per_prompt_advantages(r, ids, adv_clip=1.5)
    assert adv[:2] == pytest.approx([-1.0, 1.0], abs=1e-5)
    assert adv[5] == pytest.approx(1.5)  # (6 - 5.25) / 0.433 = 1.73 -> clipped
    with pytest.raises(ValueError, match="eta > 0"):
        DDPOSettings(eta=0.0)


def test_amortized_net_starts_at_standard_normal_for_any_prompt():
    net = AmortizedNoiseNet(embed_dim=8, latent_shape=(3, 16, 16), mean_resolution=4, learn_std=True)
    mu, log_std = net(torch.randn(5, 8))
    assert mu.shape == log_std.shape == (5, 768)
    assert torch.equal(mu, torch.zeros_like(mu)) and torch.equal(log_std, torch.zeros_like(log_std))


def test_amortized_net_mean_is_low_resolution_and_scale_free_in_the_embedding():
    net = AmortizedNoiseNet(embed_dim=8, latent_shape=(3, 16, 16), mean_resolution=2)
    with torch.no_grad():
        net.mean_linear.weight.normal_()
    e = torch.randn(1, 8)
    mu, _ = net(e)
    assert torch.allclose(mu, net(3.0 * e)[0], atol=1e-5)  # LayerNorm: only the embedding's direction matters
    grid = mu.reshape(3, 16, 16)
    assert torch.allclose(grid[:, 0, 0], grid[:, 0, 1])  # bilinear upsampling of a 2x2 mean: constant at the corners
    with pytest.raises(ValueError, match="built for 8"):
        net(torch.randn(1, 7))
    with pytest.raises(ValueError, match="text embedding"):
        AmortizedNoiseNet(embed_dim=0, latent_shape=(3, 16, 16))


def test_ddim_last_step_is_deterministic_with_zero_logprob():
    sch = _scheduler()
    t = sch.timesteps[-1]  # t = 0 -> alpha_prod[0]: zero variance
    x, x0 = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4).clamp(-1, 1)
    prev, logp = ddim_step_with_logprob(sch, x0, t, x, eta=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(prev).all() and torch.equal(logp, torch.zeros(2))
    assert torch.allclose(prev, sch.step(x0, t, x, eta=1.0, variance_noise=torch.zeros_like(x)).prev_sample)


def test_amortized_net_linear_only_is_additive_in_a_compositional_embedding():
    """hidden=0: mu is linear in the normalised embedding, so with embeddings e = a_shape + b_colour of equal norm
    the means of (s1, c1) + (s2, c2) equal those of (s1, c2) + (s2, c1)."""
    net = AmortizedNoiseNet(embed_dim=6, latent_shape=(3, 4, 4), mean_resolution=None, hidden=0)
    assert net.mean_mlp is None
    with torch.no_grad():
        net.mean_linear.weight.normal_()
    a = torch.tensor([[1.0, 0, 0, 0, 0, 0], [0, 1.0, 0, 0, 0, 0]])
    b = torch.tensor([[0, 0, 0, 1.0, 0, 0], [0, 0, 0, 0, 1.0, 0]])
    mu = lambda s, c: net((a[s] + b[c])[None])[0]
    assert torch.allclose(mu(0, 0) + mu(1, 1), mu(0, 1) + mu(1, 0), atol=1e-5)
    with pytest.raises(ValueError, match="hidden must be >= 0"):
        AmortizedNoiseNet(embed_dim=6, latent_shape=(3, 4, 4), hidden=-1)


def test_amortized_net_channel_space_path_starts_at_zero_and_has_its_rank():
    """rank=R: mu_low[c, x] = sum_r u_r(e)[c] v_r(e)[x] -- a C x (r*r) matrix of rank <= R for every prompt,
    zero at initialisation (v starts at zero) with a gradient on v from the first step."""
    net = AmortizedNoiseNet(embed_dim=8, latent_shape=(4, 8, 8), mean_resolution=4, rank=2, linear=False)
    assert net.mean_linear is None
    e = torch.randn(3, 8)
    mu, _ = net(e)
    assert torch.equal(mu, torch.zeros_like(mu))
    mu.sum().backward()
    assert net.spatial.weight.grad.abs().sum() > 0
    with torch.no_grad():
        net.spatial.weight.normal_(std=8.0)
    low = net.mean_low(e)  # (3, 4, 16) before upsampling
    assert low.shape == (3, 4, 16)
    assert all(int(torch.linalg.matrix_rank(m)) == 2 for m in low)
    with pytest.raises(ValueError, match="at least one path"):
        AmortizedNoiseNet(embed_dim=8, latent_shape=(4, 8, 8), linear=False)
    with pytest.raises(ValueError, match="rank must be >= 0"):
        AmortizedNoiseNet(embed_dim=8, latent_shape=(4, 8, 8), rank=-1)
