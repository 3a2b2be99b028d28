"""One place that turns (initial noise, prompts) into images and reward scores for the baselines."""

from __future__ import annotations

import numpy as np
import torch

from find_rl.rewards.registry import score_batch


def render_and_score(sampler, reward, noise: torch.Tensor, prompts: list[str], *, chunk: int = 576) -> dict[str, np.ndarray]:
    """Render ``noise`` ``(N, *latent_shape)`` for ``prompts`` in chunks and score the images.

    Returns ``images`` and ``score`` (and ``aligned`` when the reward reports it), each with N rows."""
    outs = []
    for i in range(0, len(prompts), chunk):
        images = sampler.sample(noise[i : i + chunk], prompts[i : i + chunk]).images
        outs.append(score_batch(reward, images, prompts[i : i + chunk]) | {"images": images})
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0] if all(k in o for o in outs)}
