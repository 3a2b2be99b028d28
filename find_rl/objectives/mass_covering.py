"""Mass-covering objectives for every policy family (each has an exact log q), free of Ray.

On the Gaussian families iw-mle is a reward-weighted regression of the mean (with sigma fixed at 1, the weighted
mean of the behaviour's draws: the cross-entropy method with a defensive prior share); on the flow it fits the whole
density.

The target is the reward-tilted prior q*(z | c) ∝ N(z; 0, I) exp(r(z, c) / beta): the optimum of
E_q[r] - beta KL(q || N(0, I)). Reverse KL by policy gradient (FIND's PPO with ``--kl-coeff``) is mode-seeking: on its
own draws it sharpens around the first rewarded region it finds. The two objectives here reach q* from samples of a
behaviour b that is broader than q (``notes/mass-covering.md``): a share ``prior_share`` of fresh N(0, I) draws
mixed into the policy's (the env runner records the mixture's exact log-density as the action's log-probability),
and optionally replayed past renders with their rewards, aligned and failed.

Notation (code name -> math), per sample i of prompt g, all in joint nats:
    log_q       -> log q(z_i | c_g), differentiable in the flow's parameters
    log_prior   -> log N(z_i; 0, I)
    log_b       -> log b(z_i | c_g), the behaviour density that drew z_i (a constant)
    delta       -> delta_i = log q(z_i) - log N(z_i) - r_i / beta; at q = q*, delta_i = -log Z_g for every z_i
    log-variance -> L = mean_i (delta_i - mean_{j in g} delta_j)^2: the variance of delta within each prompt, with log
                   Z_g the batch estimate (VarGrad / off-policy trajectory balance for a one-step chain). Its minimum
                   (0) is q = q* on the behaviour's support, whatever b is: no importance weights are needed, and
                   samples of every region the behaviour visits pull q toward q*'s mass there.
    iw-mle      -> L = - sum_g sum_{i in g} w_i log q(z_i), w = softmax_g(log N + r / beta - log b): maximum likelihood
                   of q under self-normalised importance samples of q* (adaptive importance sampling / CEM with a
                   defensive prior share).
    ESS         -> per prompt, (sum w)^2 / (n sum w^2) with w = N exp(r / beta) / b: how well the behaviour's draws
                   cover q* (1: b = q*). At prior_share 0, b = q, the mass-covering meter of ``notes/mass-covering.md``.

On-policy (b = q) the log-variance gradient equals the reverse-KL policy gradient (Sanokowski et al. 2025): what makes
it mass-covering is the behaviour, which is why the prior share is part of the objective's settings.
"""

from __future__ import annotations

import math

import torch

LOG_2PI = math.log(2 * math.pi)
OBJECTIVES = ("ppo", "log-variance", "iw-mle")


def annealed_beta(beta: float, beta_final: float | None, iteration: int, iterations: int) -> float:
    """The target temperature at 0-based ``iteration`` of ``iterations``: geometric from ``beta`` (first) to
    ``beta_final`` (last, and after), or ``beta`` throughout when ``beta_final`` is None."""
    if beta_final is None:
        return float(beta)
    if iterations <= 1:
        return float(beta if iteration <= 0 else beta_final)
    t = min(max(iteration, 0), iterations - 1) / (iterations - 1)
    return float(beta * (beta_final / beta) ** t)


def log_prior(z: torch.Tensor) -> torch.Tensor:
    """``log N(z; 0, I)`` per row of ``z`` ``(N, D)``."""
    return -0.5 * (z.pow(2).sum(-1) + z.shape[-1] * LOG_2PI)


def mixture_log_prob(log_q: torch.Tensor, log_p: torch.Tensor, prior_share: float) -> torch.Tensor:
    """``log((1 - s) q(z) + s N(z))`` from the two log-densities (exact, no underflow)."""
    if prior_share <= 0.0:
        return log_q
    if prior_share >= 1.0:
        return log_p
    return torch.logaddexp(log_q + math.log1p(-prior_share), log_p + math.log(prior_share))


def mix_in_prior(z: torch.Tensor, prior_share: float) -> torch.Tensor:
    """Draws of the behaviour mixture from draws ``z`` of q: each row replaced by a fresh N(0, I) draw with
    probability ``prior_share`` (the sampling side of :func:`mixture_log_prob`)."""
    if prior_share <= 0.0:
        return z
    fresh = torch.rand(z.shape[:-1], device=z.device) < prior_share
    return torch.where(fresh[..., None], torch.randn_like(z), z)


def _group_mean(x: torch.Tensor, group: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Per-row mean of ``x`` over the rows of its group, ``(N,)`` (differentiable)."""
    sums = torch.zeros(num_groups, dtype=x.dtype, device=x.device).index_add(0, group, x)
    counts = torch.zeros(num_groups, dtype=x.dtype, device=x.device).index_add(0, group, torch.ones_like(x))
    return (sums / counts.clamp(min=1))[group]


def residuals(log_q: torch.Tensor, log_p: torch.Tensor, reward: torch.Tensor, beta: float) -> torch.Tensor:
    """``delta_i = log q(z_i) - log N(z_i) - r_i / beta``."""
    return log_q - log_p - reward / beta


def log_variance_loss(log_q: torch.Tensor, log_p: torch.Tensor, reward: torch.Tensor, group: torch.Tensor, *,
                      beta: float, num_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The within-prompt variance of the residuals, and each row's log Z estimate (``-mean_g delta``, detached)."""
    delta = residuals(log_q, log_p, reward, beta)
    centre = _group_mean(delta, group, num_groups)
    return (delta - centre).pow(2).mean(), -centre.detach()


def _normalised_log_weights(log_w: torch.Tensor, group: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Per-group log-softmax of ``log_w``: the self-normalised log-weights (each group's weights sum to 1)."""
    m = torch.full((num_groups,), -math.inf, dtype=log_w.dtype, device=log_w.device).scatter_reduce(
        0, group, log_w, reduce="amax")
    e = torch.exp(log_w - m[group])
    s = torch.zeros(num_groups, dtype=log_w.dtype, device=log_w.device).index_add(0, group, e)
    return log_w - m[group] - torch.log(s[group])


def iw_mle_loss(log_q: torch.Tensor, log_p: torch.Tensor, log_b: torch.Tensor, reward: torch.Tensor,
                group: torch.Tensor, *, beta: float, num_groups: int) -> torch.Tensor:
    """Self-normalised importance-weighted negative log-likelihood of q under q* (weights detached), per prompt."""
    log_w = _normalised_log_weights((log_p + reward / beta - log_b).detach(), group, num_groups)
    present = torch.unique(group).numel()
    return -(torch.exp(log_w) * log_q).sum() / present


def effective_sample_size(log_p: torch.Tensor, log_b: torch.Tensor, reward: torch.Tensor, group: torch.Tensor, *,
                          beta: float, num_groups: int) -> torch.Tensor:
    """Per-group normalised ESS in (0, 1] of the weights N exp(r / beta) / b (``(num_groups,)``; NaN for an empty group)."""
    log_w = _normalised_log_weights((log_p + reward / beta - log_b).detach(), group, num_groups)
    sq = torch.zeros(num_groups, dtype=log_w.dtype, device=log_w.device).index_add(0, group, torch.exp(2 * log_w))
    n = torch.zeros(num_groups, dtype=log_w.dtype, device=log_w.device).index_add(0, group, torch.ones_like(log_w))
    return torch.where(n > 0, 1.0 / (n * sq).clamp(min=1e-30), torch.full_like(n, math.nan))
