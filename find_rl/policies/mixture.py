"""A uniform mixture of K Gaussians per prompt over the initial noise, free of Ray (``--policy-type mixture``).

Why: FIND's Gaussian reaches its alignment by moving one mean, and the images collapse to one layout (the shapes
world keeps 29% of the frozen model's aligned diversity, the scenes world 17%). The frozen model's aligned noises
are not one blob: a position prompt's aligned layouts sit in many places. A mixture of K Gaussians with **fixed,
equal weights** holds K regions at once: no component can take another's mass, so reverse-KL PPO, which sharpens
each component around the rewarded region nearest to it, ends with up to K layouts instead of one.

Notation (code name -> math), per prompt c, over the flattened latent z (D elements):
    means    -> mu_{c,1..K}, each stored at ``mean_resolution`` and bilinearly upsampled (as the Gaussian's mean)
    log_std  -> log sigma_c, shared by the components (sigma = 1 unless ``--learn-std``)
    density  -> q(z | c) = (1/K) sum_k N(z; mu_{c,k}, sigma_c^2 I), its log by logsumexp (``log_prob``); the torch
                distribution is ``torch.distributions.MixtureSameFamily`` (``torch_mixture``)
    moments  -> the mixture's per-element mean (1/K) sum_k mu_k and std sqrt(sigma^2 + Var_k mu_k): what the reward
                calibrator's g reads and the learner logs
    anchor   -> KL(q || N(0, I)) has no closed form; by convexity it is at most the components' mean KL,
                (1/K) sum_k KL(N(mu_k, sigma^2) || N(0, I)) (``kl_bound``, per element), the regulariser ``--anchor kl``
                weighs

Initialisation. Equal components get equal gradients and never separate, so the means start apart, in symmetric
pairs +-s v_j (v_j fixed random directions of unit RMS at the mean's resolution, the same in every process; an odd
K keeps one component at 0): the mixture's mean is exactly 0 at iteration 0 and each component sits ``s``
(``--mixture-init``) per element from the origin.

Drawing S samples of a prompt from the exported policy maps base noise eps_s ~ N(0, I) through component
``s mod K`` (stratified: each component draws S/K of them; ``component_of``), so every method is still compared on
the same noise.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

#: the generator seed of the initial directions (fixed: every Ray process builds the same module)
INIT_SEED = 0


def initial_means(num_prompts: int, components: int, mean_shape: tuple[int, ...], scale: float) -> torch.Tensor:
    """``(P, K, *mean_shape)``: symmetric pairs ``+-scale * v_j`` per prompt (see the module docstring)."""
    gen = torch.Generator().manual_seed(INIT_SEED)
    pairs = components // 2
    v = torch.randn(num_prompts, max(pairs, 1), *mean_shape, generator=gen)
    v = v / v.flatten(2).pow(2).mean(-1).sqrt().reshape(num_prompts, -1, *([1] * len(mean_shape)))
    out = torch.zeros(num_prompts, components, *mean_shape)
    if pairs:
        out[:, 0 : 2 * pairs : 2] = scale * v[:, :pairs]
        out[:, 1 : 2 * pairs : 2] = -scale * v[:, :pairs]
    return out


def torch_mixture(means: torch.Tensor, log_std: torch.Tensor) -> MixtureSameFamily:
    """The mixture as a ``torch.distributions`` object: ``means (N, K, D)``, ``log_std (N, D)`` -> batch ``(N,)``, event ``(D,)``."""
    n, k, _ = means.shape
    weights = Categorical(logits=torch.zeros(n, k, dtype=means.dtype, device=means.device))
    return MixtureSameFamily(weights, Independent(Normal(means, log_std.exp()[:, None, :].expand_as(means)), 1))


def log_prob(z: torch.Tensor, means: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """Joint ``log q(z)``, ``(N,)``, for ``z (N, D)`` (differentiable in the means and log std)."""
    return torch_mixture(means, log_std).log_prob(z)


def responsibilities(z: torch.Tensor, means: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """``(N, K)``: each component's posterior share of each draw (how separate the components are)."""
    comp = Independent(Normal(means, log_std.exp()[:, None, :].expand_as(means)), 1)
    return torch.softmax(comp.log_prob(z[:, None, :]), dim=-1)


def moments(means: torch.Tensor, log_std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The mixture's per-element ``(mean, log std)``, each ``(N, D)``: exact, ``Var = sigma^2 + Var_k mu_k``."""
    mean = means.mean(1)
    var = torch.exp(2 * log_std) + (means - mean[:, None]).pow(2).mean(1)
    return mean, 0.5 * var.log()


def kl_bound(means: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """``(N,)``: the components' mean per-element KL to N(0, I), an upper bound of the mixture's (convexity)."""
    sigma2 = torch.exp(2 * log_std)[:, None, :]
    return (0.5 * (sigma2 + means.pow(2) - 1.0) - log_std[:, None, :]).mean(-1).mean(-1)


def component_of(samples: int, components: int) -> torch.Tensor:
    """``(samples,)``: the component that draw s of a prompt comes from, ``s mod K`` (stratified)."""
    return torch.arange(samples) % components


def transform(means: torch.Tensor, std: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Base noise ``eps (P, S, *latent)`` -> draws of each prompt's mixture: ``means (P, K, *latent)``, ``std (P, *latent)``."""
    k = component_of(eps.shape[1], means.shape[1]).to(eps.device)
    return means[:, k] + std[:, None] * eps


def separation(means: torch.Tensor) -> torch.Tensor:
    """``(N,)``: the mean distance between two components' means, per element (RMS), for logging."""
    k = means.shape[1]
    if k < 2:
        return torch.zeros(len(means), dtype=means.dtype, device=means.device)
    d = torch.cdist(means, means) / math.sqrt(means.shape[-1])
    return d.sum((1, 2)) / (k * (k - 1))
