"""A mixture of K Gaussians per prompt over the initial noise, free of Ray (``--policy-type mixture``).

Why: FIND's Gaussian reaches its alignment by moving one mean, and the images collapse to one layout (the shapes
world keeps 29% of the frozen model's aligned diversity, the scenes world 17%). The frozen model's aligned noises
are not one blob: a position prompt's aligned layouts sit in many places. A mixture of K Gaussians with **fixed,
equal weights** holds K regions at once: no component can take another's mass, so reverse-KL PPO, which sharpens
each component around the rewarded region nearest to it, ends with up to K layouts instead of one.

Notation (code name -> math), per prompt c, over the flattened latent z (D elements):
    means    -> mu_{c,1..K}, each stored at ``mean_resolution`` and bilinearly upsampled (as the Gaussian's mean)
    log_std  -> log sigma_c, shared by the components (sigma = 1 unless ``--learn-std``)
    weights  -> w_{c,k}: 1/K, fixed (the default), or learned with a floor f (``--mixture-weight-floor``):
                w = f + (1 - K f) softmax(l_c), l_c learned logits (``weights_from_logits``)
    density  -> q(z | c) = sum_k w_k N(z; mu_{c,k}, sigma_c^2 I), its log by logsumexp (``log_prob``); the torch
                distribution is ``torch.distributions.MixtureSameFamily`` (``torch_mixture``)
    moments  -> the mixture's per-element mean sum_k w_k mu_k and std sqrt(sigma^2 + sum_k w_k (mu_k - mean)^2): what
                the reward calibrator's g reads and the learner logs
    anchor   -> KL(q || N(0, I)) has no closed form; by convexity it is at most the components' weighted KL,
                sum_k w_k KL(N(mu_k, sigma^2) || N(0, I)) (``kl_bound``, per element), the regulariser ``--anchor kl``
                weighs

Fixed equal weights keep every component's share, a stranded one's too (its images fail); learned weights move the
mass to the components that draw the prompt, down to the floor for the others, and so trade layouts for alignment.

Initialisation. Equal components get equal gradients and never separate, so the means start apart, in symmetric
pairs +-s v_j (v_j fixed random directions of unit RMS at the mean's resolution, the same in every process; an odd
K keeps one component at 0): the mixture's mean is exactly 0 at iteration 0 and each component sits ``s``
(``--mixture-init``) per element from the origin.

Seeding (``--mixture-seed-share s``, ``--mixture-width h``). The target of FIND's objective at small beta is the
frozen model's noise distribution restricted to its aligned set, which rejection sampling draws, and the frozen model
itself draws a rare prompt's aligned images at 5-35%. A seeded mixture starts at N(0, I) (every component at 0, sigma 1)
for a share s of the run's iterations, keeps the draws the reward calls aligned, and then places its K components on K of them
(``seeded_means``): component k is N(sqrt(1 - h^2) z_k, h^2 I), a kernel density estimate of the aligned noises in
which every component is one aligned noise with a little fresh noise mixed in (averaged over z_k ~ N(0, I) this kernel
gives N(0, I) back exactly: it is the preconditioned Crank-Nicolson move). Its K components sit wherever the frozen
model put the prompt's objects, so it keeps their spread by construction; FIND then goes on from there. The means are
full-resolution latents (``--mean-resolution full``): a 4 x 4 view of an aligned noise does not carry its image.

Drawing S samples of a prompt from the exported policy maps base noise eps_s ~ N(0, I) through one component each,
chosen without randomness (``component_of``): ``s mod K`` for equal weights (stratified: each component draws S/K),
else systematic sampling of the weights at a golden-ratio sequence (every prefix of the draws close to the weights),
so every method is still compared on the same noise.
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


def seeded_means(noises: torch.Tensor, components: int, width: float, *, seed: int = INIT_SEED) -> torch.Tensor:
    """``(K, D)``: K component means on the aligned noises ``noises (n, D)``, n >= 1: K of them drawn without replacement
    when n >= K, else all of them in a random order, each used in turn (component k on noise k mod n); each scaled by
    sqrt(1 - h^2), h = ``width`` in (0, 1], so that the component N(sqrt(1 - h^2) z, h^2 I) of a z ~ N(0, I) is N(0, I)."""
    if not 0 < width <= 1:
        raise ValueError(f"mixture width must be in (0, 1], got {width}")
    n = len(noises)
    if n < 1:
        raise ValueError("seeded_means needs at least one aligned noise")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    chosen = order[:components] if n >= components else order[torch.arange(components) % n]
    return math.sqrt(1.0 - width * width) * noises.reshape(n, -1)[chosen]


def weights_from_logits(logits: torch.Tensor, floor: float | None) -> torch.Tensor:
    """``(N, K)`` weights: ``floor + (1 - K floor) softmax(logits)``; ``floor`` None: equal weights (the logits unused)."""
    k = logits.shape[-1]
    if floor is None:
        return torch.full_like(logits, 1.0 / k)
    return floor + (1.0 - k * floor) * torch.softmax(logits, dim=-1)


def _weights(means: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """``weights``, or equal ones ``(N, K)`` for None."""
    if weights is not None:
        return weights
    n, k = means.shape[:2]
    return torch.full((n, k), 1.0 / k, dtype=means.dtype, device=means.device)


def _components(means: torch.Tensor, log_std: torch.Tensor) -> Independent:
    return Independent(Normal(means, log_std.exp()[:, None, :].expand_as(means)), 1)


def torch_mixture(means: torch.Tensor, log_std: torch.Tensor, weights: torch.Tensor | None = None) -> MixtureSameFamily:
    """The mixture as a ``torch.distributions`` object: ``means (N, K, D)``, ``log_std (N, D)``, ``weights (N, K)``
    (None: equal) -> batch ``(N,)``, event ``(D,)``."""
    return MixtureSameFamily(Categorical(probs=_weights(means, weights)), _components(means, log_std))


def log_prob(z: torch.Tensor, means: torch.Tensor, log_std: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Joint ``log q(z)``, ``(N,)``, for ``z (N, D)`` (differentiable in the means, log std and weights)."""
    return torch_mixture(means, log_std, weights).log_prob(z)


def responsibilities(z: torch.Tensor, means: torch.Tensor, log_std: torch.Tensor,
                     weights: torch.Tensor | None = None) -> torch.Tensor:
    """``(N, K)``: each component's posterior share of each draw (how separate the components are)."""
    return torch.softmax(_components(means, log_std).log_prob(z[:, None, :]) + _weights(means, weights).log(), dim=-1)


def moments(means: torch.Tensor, log_std: torch.Tensor, weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The mixture's per-element ``(mean, log std)``, each ``(N, D)``: exact, ``Var = sigma^2 + sum_k w_k (mu_k - mean)^2``."""
    w = _weights(means, weights)[..., None]
    mean = (w * means).sum(1)
    var = torch.exp(2 * log_std) + (w * (means - mean[:, None]).pow(2)).sum(1)
    return mean, 0.5 * var.log()


def kl_bound(means: torch.Tensor, log_std: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """``(N,)``: the components' weighted per-element KL to N(0, I), an upper bound of the mixture's (convexity)."""
    sigma2 = torch.exp(2 * log_std)[:, None, :]
    per_component = (0.5 * (sigma2 + means.pow(2) - 1.0) - log_std[:, None, :]).mean(-1)
    return (_weights(means, weights) * per_component).sum(-1)


#: the golden ratio's fractional part: u_s = frac((s + 1/2) x this) is spread evenly over [0, 1) for every prefix
GOLDEN = (5**0.5 - 1) / 2


def component_of(samples: int, components: int, weights: torch.Tensor | None = None) -> torch.Tensor:
    """``(samples,)`` for one prompt, or ``(P, samples)`` for ``weights (P, K)``: the component draw s comes from.
    Equal weights (None): ``s mod K`` (stratified). Else systematic sampling: the component whose cumulative-weight
    interval holds u_s = frac((s + 1/2) x golden ratio)."""
    if weights is None:
        return torch.arange(samples) % components
    u = torch.frac((torch.arange(samples, dtype=torch.float64) + 0.5) * GOLDEN).to(weights.device)
    edges = weights.double().cumsum(-1)
    idx = torch.searchsorted(edges, u.expand(len(weights), samples).contiguous(), right=True)
    return idx.clamp(max=components - 1)


def transform(means: torch.Tensor, std: torch.Tensor, eps: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Base noise ``eps (P, S, *latent)`` -> draws of each prompt's mixture: ``means (P, K, *latent)``, ``std (P, *latent)``,
    ``weights (P, K)`` (None: equal)."""
    p, s, k = len(eps), eps.shape[1], means.shape[1]
    if weights is None:
        idx = component_of(s, k).to(eps.device).expand(p, s)
    else:
        idx = component_of(s, k, weights).to(eps.device)
    chosen = torch.gather(means, 1, idx.reshape(p, s, *([1] * (means.dim() - 2))).expand(p, s, *means.shape[2:]))
    return chosen + std[:, None] * eps


def separation(means: torch.Tensor) -> torch.Tensor:
    """``(N,)``: the mean distance between two components' means, per element (RMS), for logging."""
    k = means.shape[1]
    if k < 2:
        return torch.zeros(len(means), dtype=means.dtype, device=means.device)
    d = torch.cdist(means, means) / math.sqrt(means.shape[-1])
    return d.sum((1, 2)) / (k * (k - 1))
