"""Diversity measures, one definition for every report (``results.md``, ``evaluate``, the comparison), no Ray.

- ``diversity``: mean pairwise L2 distance between one prompt's images (in [-1, 1] pixel units).
- ``aligned_diversity``: the same among the prompt's *aligned* images only, with a 95% jackknife interval (the mean
  pairwise distance is a U-statistic; its leave-one-out values give the interval cheaply), or ``None`` below
  ``MIN_ALIGNED`` aligned images: with 2-6 images the figure rests on 1-15 pairs.
- ``aligned_kept``: a run's aligned diversity relative to the reference, the frozen model's own aligned images under the
  same sampler (rejection sampling, :func:`find_rl.evaluation.scoring.aligned_ceiling`). A prompt with fewer than ``MIN_ALIGNED``
  aligned images keeps **0** (shown as "—" with its count), so failing a prompt never looks diverse; ``None`` where no
  reference exists for that model and sampler.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from find_rl.core.settings import SAMPLER_SAVED_DEFAULTS  # what a record that predates a sampler key meant by its absence

#: Fewest aligned images of a prompt on which its aligned diversity is reported; below it the prompt keeps 0.
MIN_ALIGNED = 8


def pairwise_distances(images: np.ndarray) -> torch.Tensor:
    """``(N, N)`` L2 distances between the rows of ``images`` (each flattened), float64."""
    x = torch.as_tensor(np.asarray(images), dtype=torch.float64).flatten(1)
    return torch.cdist(x, x)


def diversity(images: np.ndarray) -> float:
    """Mean pairwise L2 distance between the images of one prompt (``(N, ...)``; 0 below two images)."""
    n = len(images)
    if n < 2:
        return 0.0
    return float(pairwise_distances(images).sum() / (n * (n - 1)))


def aligned_diversity(images: np.ndarray) -> tuple[float, float, float] | None:
    """Mean pairwise distance of one prompt's aligned images and its 95% jackknife interval, or None below
    ``MIN_ALIGNED`` images."""
    n = len(images)
    if n < MIN_ALIGNED:
        return None
    d = pairwise_distances(images)
    total, rows = float(d.sum()), d.sum(dim=1).numpy()
    mean = total / (n * (n - 1))
    loo = (total - 2.0 * rows) / ((n - 1) * (n - 2))  # the mean without image i
    half = 1.96 * math.sqrt((n - 1) / n * float(((loo - loo.mean()) ** 2).sum()))
    return mean, mean - half, mean + half


def aligned_entry(images: np.ndarray) -> dict:
    """``{"aligned_diversity", "aligned_diversity_ci"}`` of one prompt's aligned images (both None below
    ``MIN_ALIGNED``): the fields every report row and the reference carry."""
    ad = aligned_diversity(images)
    return {"aligned_diversity": ad and ad[0], "aligned_diversity_ci": ad and [ad[1], ad[2]]}


def aligned_factor_entry(factors: np.ndarray) -> dict:
    """``{"aligned_factor_diversity", "aligned_factor_diversity_ci"}``: :func:`aligned_diversity` on the aligned images'
    factor vectors (a world's per-object positions and sizes, :meth:`find_rl.worlds.World.factors`; the columns that
    are NaN for the prompt, objects it does not have, are left out)."""
    f = np.asarray(factors, dtype=np.float64)
    f = f[:, np.isfinite(f).all(0)] if len(f) else f
    ad = aligned_diversity(f) if f.size else None
    return {"aligned_factor_diversity": ad and ad[0], "aligned_factor_diversity_ci": ad and [ad[1], ad[2]]}


#: Sampler settings that change which image a noise gives; a reference made under other values does not apply.
SAMPLER_KEYS = ("num_inference_steps", "guidance_scale", "guidance_rescale", "guidance_stop", "eta", "scheduler")


def sampler_key(settings) -> dict:
    """The sampler settings a reference is keyed on (device and dtype left out); ``settings``: a dict or an object
    with ``to_dict()``."""
    d = settings if isinstance(settings, dict) else settings.to_dict()
    return {k: d.get(k, SAMPLER_SAVED_DEFAULTS.get(k)) for k in SAMPLER_KEYS}


def same_sampler(used: dict | None, made: dict | None) -> bool:
    """Whether a row rendered with ``used`` may be compared with a reference made with ``made`` (unknown: yes)."""
    return used is None or made is None or sampler_key(used) == sampler_key(made)


def aligned_kept(row: dict, reference: dict | None, *, key: str = "aligned_diversity") -> float | None:
    """One run's aligned diversity on one prompt relative to the reference's (``{"aligned_diversity": ...}``);
    ``key="aligned_factor_diversity"``: the same on a world's factors (positions, sizes).

    ``row`` carries ``aligned_count`` and ``key`` (None below ``MIN_ALIGNED``). Returns 0.0 when the run has too few
    aligned images, None when there is no reference (another model or sampler, or no factors) or the row has no count."""
    ref = (reference or {}).get(key)
    if not ref or row.get("aligned_count") is None:
        return None
    if row["aligned_count"] < MIN_ALIGNED or row.get(key) is None:
        return 0.0
    return row[key] / ref


def kept_text(kept: float | None, count: int | None) -> str:
    """How a report prints one prompt's aligned diversity kept: "—" (with the count) below ``MIN_ALIGNED``."""
    if kept is None:
        return "—"
    if count is not None and count < MIN_ALIGNED:
        return f"— ({count} aligned)"
    return f"{kept:.0%}"
