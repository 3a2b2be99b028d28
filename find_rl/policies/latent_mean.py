"""The low-resolution latent mean: a C x r x r (x r) parameter bilinearly upsampled to the latent, free of Ray.

FIND's per-prompt and amortised policies store their mean at ``mean_resolution`` r and upsample it; the CEM and
paper-loop baselines can learn their mean in the same space, so that a comparison tests the method, not the
parametrisation.

Notation (code name -> math), per latent channel (the upsampling never mixes channels):
    mu_low           -> m, the mean parameter, r^n numbers per channel (n = number of spatial axes)
    upsample(mu_low) -> U m, with U the (S x r^n) matrix of (bi/tri)linear interpolation, ``align_corners=False``
                        (S = the latent's spatial size); exactly the interpolation ``NoisePolicyModule`` and
                        ``AmortizedNoiseNet`` apply
    fit(z)           -> argmin_m ||z - U m||^2 = pinv(U) z, the least-squares low-resolution mean of latents z

Why least squares (and not pooling) fits the mean to samples: for samples z ~ N(U m, sigma^2 I) the maximum
likelihood m is argmin sum_k ||z_k - U m||^2 = pinv(U) mean_k(z_k). Average pooling P is no inverse of U
(P U != I: at 4 -> 64, pooling U m blends each cell with its neighbours), so a pooled fit would move the mean even
when every sample already had it. pinv(U) U = I whenever U has full column rank (r at most the spatial size);
otherwise ``fit`` returns the minimum-norm least-squares solution.
"""

from __future__ import annotations

import functools
import math
import numbers

import torch
import torch.nn.functional as F

_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}  # by the number of spatial axes


def check_resolution(resolution: int | None) -> None:
    """Raise a ValueError unless ``resolution`` is None (full resolution) or an integer >= 1."""
    integral = isinstance(resolution, numbers.Integral) and not isinstance(resolution, bool)
    if resolution is not None and (not integral or resolution < 1):
        raise ValueError(f"mean_resolution must be None or an integer >= 1, got {resolution!r}")


def mean_shape(latent_shape: tuple[int, ...], resolution: int | None) -> tuple[int, ...]:
    """The mean parameter's shape: ``(C, r, ..., r)`` (one r per spatial axis), or ``latent_shape`` for None."""
    check_resolution(resolution)
    if resolution is None:
        return tuple(latent_shape)
    return (latent_shape[0], *([int(resolution)] * (len(latent_shape) - 1)))


def upsample(mu_low: torch.Tensor, latent_shape: tuple[int, ...]) -> torch.Tensor:
    """``(N, *mean_shape)`` -> ``(N, *latent_shape)`` by (bi/tri)linear interpolation; the identity when the shapes agree."""
    latent_shape = tuple(latent_shape)
    if tuple(mu_low.shape[1:]) == latent_shape:
        return mu_low
    if len(latent_shape) - 1 not in _MODES:
        raise ValueError(f"can upsample a mean to 1 to 3 spatial axes, not latent shape {latent_shape}")
    return F.interpolate(mu_low, size=latent_shape[1:], mode=_MODES[len(latent_shape) - 1], align_corners=False)


@functools.lru_cache(maxsize=8)
def upsampling_matrix(latent_shape: tuple[int, ...], resolution: int) -> torch.Tensor:
    """U, ``(S, r^n)`` float64: column j is the upsampled j-th basis vector of one channel's low-resolution grid."""
    low = mean_shape(latent_shape, resolution)[1:]
    basis = torch.eye(math.prod(low), dtype=torch.float64).reshape(-1, 1, *low)
    return upsample(basis, (1, *latent_shape[1:])).reshape(len(basis), -1).T.contiguous()


@functools.lru_cache(maxsize=8)
def _pinv(latent_shape: tuple[int, ...], resolution: int) -> torch.Tensor:
    return torch.linalg.pinv(upsampling_matrix(latent_shape, resolution))


def fit(z: torch.Tensor, latent_shape: tuple[int, ...], resolution: int | None) -> torch.Tensor:
    """Least-squares low-resolution mean of latents ``z`` ``(N, *latent_shape)`` or ``(N, D)`` -> ``(N, *mean_shape)``.

    ``upsample(fit(z))`` is the orthogonal projection of z onto the upsampled means; ``fit(upsample(m)) = m``."""
    latent_shape = tuple(latent_shape)
    shape = mean_shape(latent_shape, resolution)
    if shape == latent_shape:
        return z.reshape(len(z), *latent_shape)
    flat = z.reshape(len(z), latent_shape[0], -1).to(torch.float64)
    return (flat @ _pinv(latent_shape, int(resolution)).T).to(z.dtype).reshape(len(z), *shape)
