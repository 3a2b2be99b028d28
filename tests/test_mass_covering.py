"""A 2-D target with a known q* and three separated modes: the mass-covering objective recovers every mode's share of
q*'s mass; FIND's reverse-KL PPO objective on the same flow collapses onto one mode. A mode-seeking implementation of
the new objective fails the first test; a broken reward or flow fails both. No Ray: the objectives and the flow are the
same code the learner calls (find_rl/objectives/mass_covering.py, find_rl/policies/flow.py)."""

import pytest
import torch

from find_rl.objectives import mass_covering as ob
from find_rl.policies import policy_math as pm
from find_rl.policies.flow import ConditionalCouplingFlow, reverse_kl

pytestmark = pytest.mark.slow

CENTRES = torch.tensor([[2.0, 0.0], [-1.4, 1.4], [-0.6, -2.0]])
RADIUS = 0.7
BETA = 0.1  # q* = N(0, I) restricted to the three discs, up to e^-10


def _reward(z: torch.Tensor) -> torch.Tensor:
    return (torch.cdist(z, CENTRES) < RADIUS).any(1).float()


def _mode(z: torch.Tensor) -> torch.Tensor:
    d = torch.cdist(z, CENTRES)
    m = d.argmin(1)
    m[d.min(1).values >= RADIUS] = -1
    return m


def _shares(z: torch.Tensor) -> tuple[float, torch.Tensor]:
    m = _mode(z)
    counts = torch.stack([(m == k).float().sum() for k in range(len(CENTRES))])
    return (m >= 0).float().mean().item(), counts / counts.sum().clamp(min=1)


def _target_shares() -> torch.Tensor:
    """Each disc's share of q*'s mass: its prior mass, by Monte Carlo (q* ∝ N(0, I) on the discs)."""
    return _shares(torch.randn(1_000_000, 2, generator=torch.Generator().manual_seed(1)))[1]


def _train(objective: str, *, prior_share: float, steps: int = 800, n: int = 128, lr: float = 1e-2):
    torch.manual_seed(0)
    flow = ConditionalCouplingFlow(latent_shape=(2, 1, 1), num_conditions=1, resolution=None, num_blocks=4, hidden=16,
                                   masks=("channel",), coupling="spline", bins=8, bound=4.0)
    opt = torch.optim.Adam(flow.parameters(), lr=lr)
    cond, group = torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long)
    gen = torch.Generator().manual_seed(2)
    for _ in range(steps):
        with torch.no_grad():  # the behaviour: (1 - s) q + s N(0, I), its exact density recorded
            zq, _ = flow(torch.randn(n, 2, generator=gen), cond)
            fresh = torch.rand(n, generator=gen) < prior_share
            z = torch.where(fresh[:, None], torch.randn(n, 2, generator=gen), zq)
            r, log_p = _reward(z), ob.log_prior(z)
            log_b = ob.mixture_log_prob(flow.log_prob(z, cond), log_p, prior_share)
        log_q = flow.log_prob(z, cond)
        if objective == "iw-mle":
            loss = ob.iw_mle_loss(log_q, log_p, log_b, r, group, beta=BETA, num_groups=1)
        else:  # FIND's flow objective: the clipped surrogate on batch-mean advantages + beta * reverse KL(q || N)
            adv = (r - r.mean()) / (r.std() + 1e-6)
            loss = pm.clipped_surrogate(torch.exp(log_q - log_b), adv, 0.2).mean() + BETA * reverse_kl(flow, cond[:64]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        z, _ = flow(torch.randn(8000, 2, generator=torch.Generator().manual_seed(3)), torch.zeros(8000, dtype=torch.long))
    return _shares(z)


def test_importance_weighted_maximum_likelihood_covers_every_mode_in_proportion():
    inside, shares = _train("iw-mle", prior_share=0.3)
    target = _target_shares()
    assert inside > 0.7, inside  # most of q's mass on the rewarded discs
    # each mode's share of q*'s mass (about a third each; a mode-seeking fit puts ~1 on one mode and ~0 elsewhere)
    assert torch.allclose(shares, target, atol=0.1) and shares.min() > 0.15, (shares, target)


def test_reverse_kl_ppo_collapses_onto_one_mode():
    """The contrast the objective exists for: on its own draws, FIND's PPO objective sharpens around one mode."""
    inside, shares = _train("ppo", prior_share=0.0)
    assert inside > 0.7, inside  # it does learn the reward ...
    assert shares.max() > 0.8, shares  # ... on one mode
