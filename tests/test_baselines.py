"""Baselines and the amortised policy: hand-computed values, no Ray."""

import math
import types

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from find_rl.policies import latent_mean
from find_rl.policies.amortized import AmortizedNoiseNet
from find_rl.baselines.best_of_n import select_best
from find_rl.baselines.cem import CEMSettings, cem_update, run_cem
from find_rl.baselines.ddpo import DDPOSettings, ddim_step_with_logprob, ddpo_loss, per_prompt_advantages
from find_rl.baselines.paper_loop import PaperLoopSettings, paper_loss, run_paper_loop


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
    with pytest.raises(ValueError, match="snapshot_every >= 0"):
        DDPOSettings(snapshot_every=-1)


def test_amortized_net_starts_at_standard_normal_for_any_prompt():
    net = AmortizedNoiseNet(embed_dim=8, latent_shape=(3, 16, 16), mean_resolution=4, learn_std=True)
    mu, log_std = net(torch.randn(5, 8))
    assert mu.shape == log_std.shape == (5, 768)
    assert torch.equal(mu, torch.zeros_like(mu)) and torch.equal(log_std, torch.zeros_like(log_std))


def test_amortized_net_mean_is_low_resolution_and_scale_free_in_the_embedding():
    torch.manual_seed(0)
    net = AmortizedNoiseNet(embed_dim=8, latent_shape=(3, 16, 16), mean_resolution=2)
    with torch.no_grad():
        net.mean_linear.weight.normal_()
    e = torch.randn(1, 8)
    mu, _ = net(e)
    # LayerNorm: only the embedding's direction matters (up to its eps: a relative error ~ 4 eps / (9 var(e)))
    assert torch.allclose(mu, net(3.0 * e)[0], atol=1e-5, rtol=1e-4)
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


# --- the low-resolution mean (issue 14: CEM and the paper loop in FIND's parametrisation) --------------------------

U1 = torch.tensor([[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]])  # linear 2 -> 4, align_corners=False, by hand


class _FakeSampler:
    """Renders the noise itself as the 'image' and records every call."""
    latent_shape = (1, 4, 4)

    def __init__(self):
        self.calls = []

    def sample(self, noise, prompts):
        self.calls.append(noise.clone())
        return types.SimpleNamespace(images=noise.numpy().copy())


def _layout_reward(images, prompts):  # the top half of the latent, with a sign per prompt
    sign = np.array([1.0 if p.startswith("a") else -1.0 for p in prompts], dtype=np.float32)
    return sign * images.reshape(len(images), images.shape[1], -1)[:, :, : images[0, 0].size // 2].mean((1, 2))


def test_upsampling_is_the_policies_bilinear_one_and_least_squares_inverts_it():
    assert torch.equal(latent_mean.upsampling_matrix((1, 4, 4), 2).float(), torch.kron(U1, U1))
    m = torch.randn(2, 3, 2, 2)
    up = latent_mean.upsample(m, (3, 8, 8))
    net = AmortizedNoiseNet(embed_dim=4, latent_shape=(3, 8, 8), mean_resolution=2)  # the policies' own upsampling
    with torch.no_grad():
        net.mean_linear.bias.copy_(4 * m[0].flatten())  # the linear path divides by embed_dim
    assert torch.allclose(net(torch.randn(1, 4))[0], up[0].flatten()[None], atol=1e-6)
    assert torch.allclose(latent_mean.fit(up, (3, 8, 8), 2), m, atol=1e-5)
    assert not torch.allclose(torch.nn.functional.avg_pool2d(up, 4), m, atol=1e-2)  # pooling is no inverse of U
    assert latent_mean.mean_shape((4, 64, 64), None) == (4, 64, 64) and latent_mean.mean_shape((4, 64, 64), 4) == (4, 4, 4)
    with pytest.raises(ValueError, match="mean_resolution"):
        CEMSettings(mean_resolution=0)
    with pytest.raises(ValueError, match="mean_resolution"):
        PaperLoopSettings(mean_resolution=2.5)


def test_cem_update_fits_the_low_resolution_mean_by_least_squares():
    """Elite mean = U m* + r with r orthogonal to every upsampled mean ([1, -1, -1, 1] is orthogonal to both columns
    of U1): least squares recovers m* exactly, so the step is smoothing * m*. Pooling would not (P U1 != I)."""
    s = CEMSettings(population=4, elite_frac=0.5, smoothing=0.5, mean_resolution=2)
    m_star = torch.tensor([[2.0, 0.0], [0.0, -2.0]])
    ortho = torch.outer(torch.tensor([1.0, -1.0, -1.0, 1.0]), torch.tensor([1.0, 2.0, 3.0, 4.0]))
    elite_mean = U1 @ m_star @ U1.T + ortho
    delta = torch.arange(16.0).reshape(4, 4) / 16
    far = torch.full((4, 4), 100.0)  # the two non-elites, far off: they must not enter the fit
    samples = torch.stack([elite_mean + delta, far, elite_mean - delta, -far]).flatten(1)
    scores = np.array([0.9, 0.1, 0.8, 0.0])
    mean, std = cem_update(torch.zeros(4), torch.ones(16), samples, scores, s, rng=np.random.default_rng(0),
                           latent_shape=(1, 4, 4))
    assert torch.allclose(mean, 0.5 * m_star.flatten(), atol=1e-6)
    assert torch.equal(std, torch.ones(16))
    pooled = torch.nn.functional.avg_pool2d(elite_mean[None, None], 2).flatten()  # 0.875 m* + 0.125 (neighbours) + ...
    assert not torch.allclose(pooled, m_star.flatten(), atol=0.1)
    with pytest.raises(ValueError, match="latent_shape"):
        cem_update(torch.zeros(4), torch.ones(16), samples, scores, s, rng=np.random.default_rng(0))


def test_run_cem_at_low_resolution_samples_around_the_upsampled_parameter():
    s = CEMSettings(iterations=2, population=4, elite_frac=0.5, smoothing=0.5, mean_resolution=2)
    sampler = _FakeSampler()
    out = run_cem(sampler, _layout_reward, ["a", "b"], s, seed=3, log=None)
    gen = torch.Generator().manual_seed(3)
    eps = [torch.randn(2, 4, 16, generator=gen) for _ in range(2)]  # run_cem's draws, in order
    z0 = sampler.calls[0].reshape(2, 4, 16)
    assert torch.equal(z0, eps[0])  # iteration 0: mean 0, std 1
    # iteration 1 samples around U m1, m1 = 0.5 * least squares of the elites (top 2 by reward) of iteration 0
    scores0 = _layout_reward(z0.reshape(8, 1, 4, 4).numpy(), ["a"] * 4 + ["b"] * 4).reshape(2, 4)
    for i in range(2):
        elites = z0[i][torch.as_tensor(np.argsort(-scores0[i])[:2])].mean(0).reshape(4, 4)
        m1 = 0.5 * torch.linalg.lstsq(torch.kron(U1, U1), elites.flatten()[:, None]).solution.reshape(2, 2)
        assert torch.allclose(sampler.calls[1].reshape(2, 4, 16)[i] - eps[1][i], (U1 @ m1 @ U1.T).flatten(), atol=1e-5)
    assert out["mean_param"].shape == (2, 1, 2, 2) and out["mean"].shape == (2, 1, 4, 4)
    assert torch.allclose(out["mean"], latent_mean.upsample(out["mean_param"], (1, 4, 4)))
    assert out["mean_param"].abs().sum() > 0


def test_run_paper_loop_at_low_resolution_learns_the_upsampled_parameter():
    s = PaperLoopSettings(iterations=1, mean_resolution=2)
    one = run_paper_loop(_FakeSampler(), _layout_reward, ["a", "b"], s, seed=2, log=None)
    assert one["mean_param"].shape == (2, 1, 2, 2) and one["mean_param"].abs().sum() > 0
    assert torch.allclose(one["mean"], latent_mean.upsample(one["mean_param"], (1, 4, 4)))
    sampler = _FakeSampler()
    run_paper_loop(sampler, _layout_reward, ["a", "b"], PaperLoopSettings(iterations=2, mean_resolution=2), seed=2, log=None)
    gen = torch.Generator().manual_seed(2)
    eps = [torch.randn(2, 16, generator=gen) for _ in range(2)]
    # iteration 1 draws z = U m1 + sigma1 * eps, with (m1, sigma1) the parameters after one step
    expect = one["mean"].flatten(1) + one["std"].flatten(1) * eps[1]
    assert torch.allclose(sampler.calls[1].flatten(1), expect, atol=1e-6)


def test_full_resolution_cem_samples_around_the_elite_mean_and_both_baselines_learn_the_rewarded_layout():
    """At full resolution the parameter is the mean itself: CEM's second population is drawn around smoothing x the
    elites' mean (by hand), and both CEM and the paper's loop move the mean's rewarded top half the way each prompt's
    reward wants (+ for "a", - for "b"; CEM further than the unrewarded bottom half)."""
    class Sampler2(_FakeSampler):
        latent_shape = (2, 4, 4)

    sampler = Sampler2()
    s = CEMSettings(iterations=2, population=8, elite_frac=0.25, smoothing=0.5)
    run_cem(sampler, _layout_reward, ["a", "b"], s, seed=1, log=None)
    gen = torch.Generator().manual_seed(1)
    eps = [torch.randn(2, 8, 32, generator=gen) for _ in range(2)]
    z0 = sampler.calls[0].reshape(2, 8, 32)
    assert torch.equal(z0, eps[0])
    scores0 = _layout_reward(z0.reshape(16, 2, 4, 4).numpy(), ["a"] * 8 + ["b"] * 8).reshape(2, 8)
    for i in range(2):
        elites = z0[i][torch.as_tensor(np.argsort(-scores0[i])[:2])]
        mean1 = 0.5 * elites.mean(0)
        spread = sampler.calls[1].reshape(2, 8, 32)[i] - mean1  # the second population, centred on the new mean
        assert torch.allclose(spread / spread.std(0, keepdim=True), eps[1][i] / eps[1][i].std(0, keepdim=True), atol=1e-4)

    def top_minus_bottom(mean):  # (2 prompts, 2, 4, 4): mean of the rewarded top half, and |mean| of the bottom half
        m = mean.reshape(2, 2, 4, 4)
        return m[:, :, :2].mean((1, 2, 3)), m[:, :, 2:].abs().mean((1, 2, 3))

    c = run_cem(Sampler2(), _layout_reward, ["a", "b"], CEMSettings(iterations=5, population=16), seed=1, log=None)
    p = run_paper_loop(Sampler2(), _layout_reward, ["a", "b"], PaperLoopSettings(iterations=20), seed=1, log=None)
    top, bottom = top_minus_bottom(c["mean"])
    assert top[0] > 0 > top[1] and top.abs().min() > bottom.max(), (top, bottom)
    top, _ = top_minus_bottom(p["mean"])  # one sample per step: its bottom half drifts with the noise, its top half climbs
    assert top[0] > 0 > top[1], top
