"""FIND's policy math, free of Ray: Gaussian log-densities, the per-element ratio, the clipped surrogate, anchors.

Notation (code name -> paper):
    z           -> z_T, the initial noise (an action), flattened to D elements
    mu, log_std -> the policy N(mu, sigma^2) over z_T, diagonal, per prompt
    logp        -> log pi(z): we use the **per-element mean** of the log-density (the paper's choice)
    ratio       -> pi_theta(z) / pi_behaviour(z), per element: exp(mean_d log pi_theta - mean_d log pi_b)
    adv         -> the calibrated reward r* = r - g(mu, sigma, c), optionally normalised

Why the per-element mean: the joint log-density of a 768- or 16384-element Gaussian changes by hundreds of
nats under tiny parameter moves, so ``exp(sum_d ...)`` overflows float32 and PPO's clip would engage at
once. Averaging over elements makes ``log ratio`` an average per-element quantity. Since z is drawn from
the behaviour policy b, ``E_b[-log ratio] = KL(b || pi) / D``: clipping the ratio at ``1 + clip_param``
therefore bounds how far one update can move the policy to roughly ``ln(1 + clip_param)`` nats **per latent
element** (clip_param = 0.2 -> 0.18 nats/element; a uniform mean shift of ~0.6 sigma, or a std change to
~0.61x or ~1.45x, reaches it). It is a trust region in the geometry of the whole latent, not of one sample.
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
    """Per-element KL(behaviour || new) estimate ``E[(r - 1) - log r]`` (Schulman's k3; >= 0, low variance)."""
    return (torch.expm1(log_r) - log_r).mean()


def kl_to_standard_normal(mu: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """Analytic per-element mean ``KL(N(mu, sigma^2) || N(0, 1)) = (sigma^2 + mu^2 - 1)/2 - log sigma``."""
    return (0.5 * (torch.exp(2 * log_std) + mu**2 - 1.0) - log_std).mean(-1)


def l2_anchor(mu: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """The released code's stand-in for a KL: per-element mean of ``mu^2 + (sigma - 1)^2``."""
    return (mu**2 + (torch.exp(log_std) - 1.0) ** 2).mean(-1)


def entropy_per_element(log_std: torch.Tensor) -> torch.Tensor:
    """Per-element mean differential entropy of the diagonal Gaussian."""
    return (log_std + 0.5 + LOG_SQRT_2PI).mean(-1)
