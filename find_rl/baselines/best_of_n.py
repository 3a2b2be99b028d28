"""Best-of-N at generation time: for every delivered image, render N candidates from N(0, I), score them with the
reward and keep the best. No training; the cost is N renders and N reward evaluations per delivered image."""

from __future__ import annotations

import numpy as np
import torch

from find_rl.baselines.scoring import render_and_score


def select_best(scores: np.ndarray, n: int) -> np.ndarray:
    """``scores`` of ``images * n`` candidates (image-major) -> the index of each image's best candidate
    (the first one on ties: candidates are i.i.d., so this is an unbiased pick among equals)."""
    scores = np.asarray(scores).reshape(-1, n)
    return np.arange(len(scores)) * n + scores.argmax(1)


def best_of_n(sampler, reward, prompts: list[str], *, n: int, images: int, seed: int = 0) -> dict[str, dict]:
    """``images`` delivered images per prompt, each the best of ``n`` candidates.

    Returns ``{prompt: {"images": (images, 3, H, W), "scores": (images,), "candidates_aligned": rate}}``."""
    if n < 1 or images < 1:
        raise ValueError(f"best-of-N needs n >= 1 and images >= 1, got n={n}, images={images}")
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for p in prompts:
        noise = torch.randn((images * n, *sampler.latent_shape), generator=gen)
        scored = render_and_score(sampler, reward, noise, [p] * (images * n))
        keep = select_best(scored["score"], n)
        out[p] = {"images": scored["images"][keep], "scores": scored["score"][keep],
                  "candidates_aligned": float(scored["aligned"].mean()) if "aligned" in scored else float("nan")}
    return out
