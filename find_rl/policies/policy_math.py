"""FIND's policy math, free of Ray: Gaussian log-densities, the per-element ratio, the clipped surrogate, anchors.

Notation (code name -> paper):
    z           -> z_T, the initial noise (an action), flattened to D elements
    mu, log_std -> the policy N(mu, sigma^2) over z_T, diagonal, per prompt
    logp        -> log pi(z): we use the **per-element mean** of the log-density (the paper's choice)
    ratio       -> pi_theta(z) / pi_behaviour(z), per element: exp(mean_d log pi_theta - mean_d log pi_b)
    adv         -> the calibrated reward r* = r - g(mu, sigma, c), optionally normalised

Why the per-element mean: the joint log-density of a 768- or 16384-element Gaussian changes by hundreds of
nats under tiny parameter moves, so ``exp(sum_d ...)`` overflows float32 and PPO's clip would engage at
once. Averaging over elements makes ``log ratio`` an average per-element quantity.

The trust region this implies for ``clip_param`` (eps). z is drawn from the behaviour policy b, so
``E_b[log ratio] = -KL(b || pi) / D``: in D dimensions almost *every* sample's ratio falls below 1 as pi moves
away from b, whichever way it moves (a sample's own pull, ~|delta|/sqrt(D), is swamped by the -|delta|^2/2
term). The binding edge is therefore the **lower** one, ``1 - eps``, i.e. about ``-ln(1 - eps)`` nats of
KL per latent element (eps = 0.2 -> 0.22 nats/element; a uniform mean shift of ~0.67 sigma). With PPO's
``min(unclipped, clipped)`` it stops the gradient of samples with A < 0 once their ratio leaves the band, and
keeps the pessimistic unclipped term for A > 0: the region is one-sided, and the step size is set mostly by
lr x epochs. The released code's clamp-only loss (``mode="clamp"``) stops both, at the cost of also stopping
corrections. ``approx_kl`` (below) reports the per-element KL(b || pi) so the actual step is visible.
"""

from __future__ import annotations

import math

import torch

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def split_dist_inputs(dist_inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """RLlib's DiagGaussian inputs ``cat([mu, log_std], -1)`` -> ``(mu, log_std)``."""
    mu, log_std = dist_inputs.chunk(2, dim=-1)
    return mu, log_std


def mean_log_density(z: torch.Tensor, mu: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """Per-element mean of ``log N(z; mu, exp(log_std)^2)`` over the last dim: ``(N, D) -> (N,)``."""
    return (-0.5 * ((z - mu) * torch.exp(-log_std)) ** 2 - log_std - LOG_SQRT_2PI).mean(-1)


def log_ratio(logp_new_mean: torch.Tensor, logp_old_mean: torch.Tensor, *, bound: float = 20.0) -> torch.Tensor:
    """Per-element log-ratio, clamped to ``[-bound, bound]`` before any ``exp`` (a guard, never hit in practice)."""
    return (logp_new_mean - logp_old_mean).clamp(-bound, bound)


def clipped_surrogate(ratio: torch.Tensor, adv: torch.Tensor, clip_param: float | None, *, mode: str = "ppo") -> torch.Tensor:
    """The per-sample policy loss (to minimise).

    - ``"ppo"``: ``-min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A)``, PPO's pessimistic bound.
    - ``"clamp"``: ``-clip(ratio, 1 - eps, 1 + eps) * A``, the released FIND code: outside the band the
      gradient is zero whatever the sign of A (it cannot undo an overshoot).
    ``clip_param=None`` (or inf) disables clipping: ``-ratio * A``.
    """
    if clip_param is None or math.isinf(clip_param):
        return -ratio * adv
    if clip_param <= 0:
        raise ValueError(f"clip_param must be > 0 (or None for no clipping), got {clip_param}")
    clipped = ratio.clamp(1.0 - clip_param, 1.0 + clip_param)
    if mode == "ppo":
        return -torch.min(ratio * adv, clipped * adv)
    if mode == "clamp":
        return -clipped * adv
    raise ValueError(f"surrogate mode must be 'ppo' or 'clamp', got {mode!r}")


def clip_fraction(ratio: torch.Tensor, clip_param: float | None) -> torch.Tensor:
    """Share of samples whose ratio lies outside ``[1 - eps, 1 + eps]``."""
    if clip_param is None or math.isinf(clip_param):
        return torch.zeros((), device=ratio.device)
    return ((ratio - 1.0).abs() > clip_param).float().mean()


def approx_kl(log_r: torch.Tensor) -> torch.Tensor:
    """Per-element KL(behaviour || new) estimate ``-E_b[log r]`` (k1) from per-element log-ratios.

    (Schulman's k3, ``E[(r - 1) - log r]``, relies on ``E_b[r] = 1``, which holds for the joint ratio but not
    for the per-element one: it would report ~KL^2/2 here.)
    """
    return -log_r.mean()


def kl_to_standard_normal(mu: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """Analytic per-element mean ``KL(N(mu, sigma^2) || N(0, 1)) = (sigma^2 + mu^2 - 1)/2 - log sigma``."""
    return (0.5 * (torch.exp(2 * log_std) + mu**2 - 1.0) - log_std).mean(-1)


def l2_anchor(mu: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """The released code's stand-in for a KL: per-element mean of ``mu^2 + (sigma - 1)^2``."""
    return (mu**2 + (torch.exp(log_std) - 1.0) ** 2).mean(-1)


def entropy_per_element(log_std: torch.Tensor) -> torch.Tensor:
    """Per-element mean differential entropy of the diagonal Gaussian."""
    return (log_std + 0.5 + LOG_SQRT_2PI).mean(-1)
