"""Rewards: plain callables ``(images, prompts) -> scores``; a name -> factory registry at the bottom.

A reward may also offer ``score(images, prompts) -> dict`` with a float ``"score"`` array plus per-image
attribute results (bool arrays), which the env puts in ``info``. Images are ``(N, 3, H, W)`` float32 in [-1, 1].
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from find_rl.shapes.detector import DEFAULT_IOU, STRICT_IOU, score_images


class ShapesReward:
    """The shapes world's exact detector: graded score in [0, 1] plus an ``aligned`` flag per image."""

    def __init__(self, *, min_iou: float = DEFAULT_IOU):
        self.min_iou = min_iou

    def score(self, images: np.ndarray, prompts: list[str]) -> dict[str, np.ndarray]:
        return score_images(images, prompts, min_iou=self.min_iou)

    def __call__(self, images: np.ndarray, prompts: list[str]) -> np.ndarray:
        return self.score(images, prompts)["score"]


REWARDS: dict[str, Callable[[], Callable]] = {
    "shapes": lambda: ShapesReward(min_iou=DEFAULT_IOU),
    "shapes-strict": lambda: ShapesReward(min_iou=STRICT_IOU),
}


def make_reward(name: str):
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}; available: {', '.join(sorted(REWARDS))}")
    return REWARDS[name]()


def score_batch(reward, images: np.ndarray, prompts: list[str]) -> dict[str, np.ndarray]:
    """Call ``reward`` and check its output: one finite-or-flagged float per image.

    Returns the reward's dict with ``"score"`` (non-finite scores replaced by 0) and ``"valid"`` (False where
    the reward returned NaN/inf, so that the sample can be skipped and counted instead of corrupting the policy).
    """
    out = dict(reward.score(images, prompts)) if hasattr(reward, "score") else {"score": reward(images, prompts)}
    scores = np.asarray(out["score"], dtype=np.float64).reshape(-1)
    if len(scores) != len(prompts):
        raise ValueError(f"reward returned {len(scores)} scores for {len(prompts)} images; it must return one per image")
    valid = np.isfinite(scores)
    out["score"] = np.where(valid, scores, 0.0).astype(np.float32)
    out["valid"] = valid
    return out
