"""The monotone rational-quadratic spline of Neural Spline Flows (Durkan et al. 2019, arXiv 1906.04032), elementwise.

Written from the paper's equations (section 3.1 and appendix A), not copied from its code. Notation (code -> paper):
    bound        -> B: the spline lives on [-B, B] and is the identity outside (linear tails, derivative 1)
    w, h         -> bin widths and heights (softmax of the raw parameters, floored at ``min_bin``, scaled to 2B)
    cw, ch       -> knot positions x^(k), y^(k);  d -> derivatives delta^(k) at the knots (1 at both ends)
    s, xi        -> s_k = h_k / w_k, xi = (x - x^(k)) / w_k  (eq. 4)
    forward      -> y = y^(k) + h_k [s_k xi^2 + delta_k xi (1 - xi)] / [s_k + (delta_{k+1} + delta_k - 2 s_k) xi (1 - xi)]
    log|dy/dx|   -> eq. 5;  inverse -> the root of the quadratic in appendix A (the numerically stable form)

All raw parameters at zero give equal bins and unit derivatives: the identity, exactly (the flow's initialisation).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def rq_spline(x: torch.Tensor, w_raw: torch.Tensor, h_raw: torch.Tensor, d_raw: torch.Tensor, *, bound: float = 3.0,
              inverse: bool = False, min_bin: float = 1e-3, min_derivative: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the spline (or its inverse) elementwise: ``x (...)``, ``w_raw, h_raw (..., K)``, ``d_raw (..., K - 1)``.

    Returns ``(y, log|dy/dx|)`` (for the inverse: ``(x, log|dx/dy|)``), both shaped like ``x``.
    """
    k_bins = w_raw.shape[-1]
    inside = (x > -bound) & (x < bound)
    xc = x.clamp(-bound, bound)
    w = min_bin + (1 - min_bin * k_bins) * torch.softmax(w_raw, -1)
    h = min_bin + (1 - min_bin * k_bins) * torch.softmax(h_raw, -1)
    cw = F.pad(torch.cumsum(w, -1), (1, 0)) * 2 * bound - bound
    ch = F.pad(torch.cumsum(h, -1), (1, 0)) * 2 * bound - bound
    w, h = cw[..., 1:] - cw[..., :-1], ch[..., 1:] - ch[..., :-1]
    d = F.pad(min_derivative + F.softplus(d_raw + math.log(math.expm1(1 - min_derivative))), (1, 1), value=1.0)
    knots = ch if inverse else cw
    k = torch.searchsorted(knots[..., 1:-1].contiguous(), xc[..., None].contiguous())  # bin index, (..., 1)

    def at(t: torch.Tensor) -> torch.Tensor:
        return t.gather(-1, k)[..., 0]

    xk, yk, wk, hk, dk, dk1 = at(cw), at(ch), at(w), at(h), at(d[..., :-1]), at(d[..., 1:])
    sk = hk / wk
    if inverse:
        dy = xc - yk
        a = hk * (sk - dk) + dy * (dk1 + dk - 2 * sk)
        b = hk * dk - dy * (dk1 + dk - 2 * sk)
        c = -sk * dy
        xi = (2 * c) / (-b - torch.sqrt((b * b - 4 * a * c).clamp(min=0)))
        out = xk + xi * wk
    else:
        xi = (xc - xk) / wk
    t = xi * (1 - xi)
    den = sk + (dk1 + dk - 2 * sk) * t
    logdet = 2 * torch.log(sk) + torch.log(dk1 * xi * xi + 2 * sk * t + dk * (1 - xi) ** 2) - 2 * torch.log(den)
    if not inverse:
        out = yk + hk * (sk * xi * xi + dk * t) / den
    else:
        logdet = -logdet
    return torch.where(inside, out, x), torch.where(inside, logdet, torch.zeros_like(logdet))
