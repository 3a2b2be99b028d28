"""One place that turns (initial noise, prompts) into images and reward scores for the baselines."""

from __future__ import annotations

import numpy as np
import torch

from find_rl.diffusion.sampler import RENDER_CHUNK, render
from find_rl.rewards.registry import score_batch


def render_and_score(sampler, reward, noise: torch.Tensor, prompts: list[str], *, chunk: int = RENDER_CHUNK) -> dict[str, np.ndarray]:
    """Render ``noise`` ``(N, *latent_shape)`` for ``prompts`` (:func:`find_rl.diffusion.sampler.render`) and score the
    images in the same chunks. Returns ``images`` and ``score`` (and ``aligned`` when the reward reports it), N rows each."""
    images = render(sampler, noise, prompts, chunk=chunk)
    outs = [score_batch(reward, images[i : i + chunk], prompts[i : i + chunk]) for i in range(0, len(prompts), chunk)]
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0] if all(k in o for o in outs)} | {"images": images}
