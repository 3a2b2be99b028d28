"""The learner's loss for each policy family and objective on a hand-built minibatch, against a hand computation
(torch.distributions and the formulas written out here, not find_rl's helpers). No Ray cluster: the objectives take
the module, the batch columns RLlib's pipeline produces and the mask."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.evaluation.postprocessing import Postprocessing

from find_rl.core.observation import ObservationLayout
from find_rl.core.settings import FindSettings, PolicySettings
from find_rl.objectives.anchor import AdaptiveAnchor
from find_rl.rllib.families import FAMILIES
from find_rl.rllib.losses import ClippedSurrogate, LearnerState, MassCovering, make_objective

P, SHAPE = 2, (3, 4, 4)
D = math.prod(SHAPE)


def _module(policy_type: str, **settings):
    cls = FAMILIES[policy_type]
    obs = gym.spaces.Box(-np.inf, np.inf, (P + 8,), np.float32)
    act = gym.spaces.Box(-np.inf, np.inf, (D,), np.float32)
    policy = PolicySettings(policy_type=policy_type, mean_resolution=2, **settings)
    m = cls(observation_space=obs, action_space=act, model_config=cls.model_config_for(policy, num_prompts=P, latent_shape=SHAPE))
    torch.manual_seed(1)
    with torch.no_grad():  # move away from N(0, I) so that every term is non-trivial
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return m


def _batch(n: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.zeros(n, P + 8)
    obs[torch.arange(n), torch.arange(n) % P] = 1.0
    obs[:, P:] = torch.randn(n, 8, generator=g)
    z = torch.randn(n, D, generator=g)
    return {Columns.OBS: obs, Columns.ACTIONS: z, Columns.ACTION_LOGP: -0.5 * (z**2).sum(-1) - 0.5 * D * math.log(2 * math.pi)
            + 0.05 * torch.randn(n, generator=g),
            Postprocessing.ADVANTAGES: torch.randn(n, generator=g), Postprocessing.VALUE_TARGETS: torch.rand(n, generator=g),
            Columns.LOSS_MASK: torch.tensor([True, True, True, False, True, True])[:n]}


def _hand_gaussian_logp(mu, log_std, z):
    return torch.distributions.Normal(mu, log_std.exp()).log_prob(z).sum(-1)


def _hand_ppo(logp_new, batch, clip, mask):
    r = torch.exp(logp_new / D - batch[Columns.ACTION_LOGP] / D)
    a = batch[Postprocessing.ADVANTAGES]
    per = -torch.min(r * a, r.clamp(1 - clip, 1 + clip) * a)
    return per[mask].mean()


@pytest.mark.parametrize("anchor", ["kl", "l2", "none"])
def test_ppo_loss_of_the_per_prompt_gaussian(anchor):
    m = _module("per-prompt", learn_std=True)
    batch, find = _batch(), FindSettings(clip_param=0.05, anchor=anchor, anchor_coeff=0.3)
    mask = batch[Columns.LOSS_MASK]
    fwd = m.forward_train({Columns.OBS: batch[Columns.OBS]})
    loss, metrics = ClippedSurrogate().loss(m, batch, fwd, mask, LearnerState(find=find, layout=ObservationLayout(P), clip=find.clip))

    mu, log_std = m.distribution(torch.arange(6) % P)
    hand = _hand_ppo(_hand_gaussian_logp(mu, log_std, batch[Columns.ACTIONS]), batch, 0.05, mask)
    sigma2 = (2 * log_std).exp()
    kl = (0.5 * (sigma2 + mu**2 - 1) - log_std).mean(-1)
    l2 = (mu**2 + (log_std.exp() - 1) ** 2).mean(-1)
    reg = {"kl": kl, "l2": l2, "none": torch.zeros(6)}[anchor][mask].mean()
    assert loss.item() == pytest.approx((hand + 0.3 * reg).item(), rel=1e-5, abs=1e-7)
    assert metrics["anchor"] == pytest.approx(reg.item(), rel=1e-5, abs=1e-7)
    assert 0.0 < metrics["clip_fraction"] <= 1.0  # the perturbed policy is outside the band on some rows
    loss.backward()
    assert m.mu.grad is not None and m.mu.grad.abs().sum() > 0


def test_ppo_loss_with_the_adaptive_anchor_weighs_each_prompt():
    m = _module("per-prompt")
    batch, find = _batch(), FindSettings(clip_param=0.05, anchor="kl", anchor_coeff=0.1, target_alignment=0.5)
    mask = batch[Columns.LOSS_MASK]
    anchor = AdaptiveAnchor(num_groups=P, target=0.5, init=0.1, factor=1.5)
    anchor.coeffs = torch.tensor([0.2, 2.0])
    fwd = m.forward_train({Columns.OBS: batch[Columns.OBS]})
    loss, _ = ClippedSurrogate().loss(m, batch, fwd, mask, LearnerState(find=find, layout=ObservationLayout(P), clip=find.clip,
                                                                        adaptive_anchor=anchor))
    mu, log_std = m.distribution(torch.arange(6) % P)
    hand = _hand_ppo(_hand_gaussian_logp(mu, log_std, batch[Columns.ACTIONS]), batch, 0.05, mask)
    kl = (0.5 * ((2 * log_std).exp() + mu**2 - 1) - log_std).mean(-1)
    weights = torch.tensor([0.2, 2.0])[torch.arange(6) % P]
    assert loss.item() == pytest.approx((hand + (weights * kl)[mask].mean()).item(), rel=1e-5)


def test_ppo_loss_of_the_amortized_gaussian():
    m = _module("amortized", amortized_hidden=4)
    batch, find = _batch(), FindSettings(clip_param=0.2, anchor="none")
    mask = batch[Columns.LOSS_MASK]
    fwd = m.forward_train({Columns.OBS: batch[Columns.OBS]})
    loss, _ = ClippedSurrogate().loss(m, batch, fwd, mask, LearnerState(find=find, layout=ObservationLayout(P), clip=find.clip))
    mu, log_std = m.net(batch[Columns.OBS][:, P:])
    hand = _hand_ppo(_hand_gaussian_logp(mu, log_std, batch[Columns.ACTIONS]), batch, 0.2, mask)
    assert loss.item() == pytest.approx(hand.item(), rel=1e-5)


def test_ppo_loss_of_the_flow_with_its_reverse_kl():
    m = _module("flow", flow_blocks=2, flow_hidden=8)
    batch, find = _batch(), FindSettings(clip_param=0.05, prior_kl_coeff=0.5)
    mask = batch[Columns.LOSS_MASK]
    fwd = m.forward_train({Columns.OBS: batch[Columns.OBS]})
    torch.manual_seed(7)
    loss, _ = ClippedSurrogate().loss(m, batch, fwd, mask, LearnerState(find=find, layout=ObservationLayout(P), clip=find.clip))
    # by hand: the flow's exact log-density, and the reverse KL from the same fresh draws (same seed)
    cond = batch[Columns.OBS][:, :P]
    logp = m.flow.log_prob(batch[Columns.ACTIONS], cond)
    hand = _hand_ppo(logp, batch, 0.05, mask)
    torch.manual_seed(7)
    feats = m.flow.features(cond[mask])
    u = torch.randn(len(feats), *m.flow.view.shape)
    y, logdet = m.flow.transform(u, feats)
    kl = (0.5 * (y.flatten(1).pow(2).sum(1) - u.flatten(1).pow(2).sum(1)) - logdet).mean() / D
    assert kl.item() > 0
    assert loss.item() == pytest.approx((hand + 0.5 * kl).item(), rel=1e-4)


@pytest.mark.parametrize("kind", ["log-variance", "iw-mle"])
def test_mass_covering_losses_of_the_flow(kind):
    m = _module("flow", flow_blocks=2, flow_hidden=8)
    batch, beta = _batch(), 0.1
    find = FindSettings(objective=kind, beta=beta)
    assert isinstance(make_objective(find), MassCovering)
    mask = batch[Columns.LOSS_MASK]
    loss, metrics = MassCovering(kind).loss(m, batch, None, mask, LearnerState(find=find, layout=ObservationLayout(P), clip=find.clip))
    rows = mask.nonzero().squeeze(-1)
    z, cond = batch[Columns.ACTIONS][rows], batch[Columns.OBS][rows, :P]
    group, r = cond.argmax(-1), batch[Postprocessing.VALUE_TARGETS][rows]
    log_q = m.flow.log_prob(z, cond)
    log_p = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    if kind == "log-variance":
        delta = log_q - log_p - r / beta
        centre = torch.stack([delta[group == g].mean() for g in range(P)])[group]
        hand = ((delta - centre) ** 2).mean()
    else:
        log_b = batch[Columns.ACTION_LOGP][rows]
        logits = log_p + r / beta - log_b
        w = torch.zeros_like(logits)
        for g in range(P):
            w[group == g] = torch.softmax(logits[group == g], 0)
        hand = -(w * log_q).sum() / P
    assert loss.item() == pytest.approx(hand.item(), rel=1e-4)
    assert 0 < metrics["ess"] <= 1.0


@pytest.mark.parametrize("anchor", ["kl", "none"])
def test_ppo_loss_of_the_mixture_with_its_kl_bound(anchor):
    m = _module("mixture", mixture_components=3, learn_std=True)
    batch, find = _batch(), FindSettings(clip_param=0.05, anchor=anchor, anchor_coeff=0.3)
    mask = batch[Columns.LOSS_MASK]
    fwd = m.forward_train({Columns.OBS: batch[Columns.OBS]})
    loss, metrics = ClippedSurrogate().loss(m, batch, fwd, mask, LearnerState(find=find, layout=ObservationLayout(P), clip=find.clip))
    # by hand: (1/3) sum_k N(z; mu_k, sigma^2), each component's low-resolution mean upsampled bilinearly
    idx = torch.arange(6) % P
    low = m.means[idx]  # (6, 3, 3, 2, 2)
    mu = torch.nn.functional.interpolate(low.reshape(18, 3, 2, 2), size=SHAPE[1:], mode="bilinear",
                                         align_corners=False).reshape(6, 3, D)
    log_std = m.log_std[idx].clamp(min=math.log(0.5)).expand(6, D)
    z = batch[Columns.ACTIONS]
    per_comp = torch.stack([_hand_gaussian_logp(mu[:, k], log_std, z) for k in range(3)], -1)
    logp = torch.logsumexp(per_comp, -1) - math.log(3)
    hand = _hand_ppo(logp, batch, 0.05, mask)
    kl = torch.stack([(0.5 * ((2 * log_std).exp() + mu[:, k] ** 2 - 1) - log_std).mean(-1) for k in range(3)], -1).mean(-1)
    reg = kl[mask].mean() if anchor == "kl" else torch.zeros(())
    assert loss.item() == pytest.approx((hand + 0.3 * reg).item(), rel=1e-5, abs=1e-7)
    assert metrics["anchor"] == pytest.approx(reg.item(), rel=1e-5, abs=1e-7)
    loss.backward()
    assert all(m.means.grad[:, k].abs().sum() > 0 for k in range(3))  # every component learns from every draw
