"""The shapes world behind the world seam (:class:`find_rl.worlds.World`): 9 prompts, 16x16, the exact detector."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from find_rl.worlds import World
from find_rl.worlds.shapes.detector import DEFAULT_IOU, STRICT_IOU, score_images
from find_rl.worlds.shapes.world import all_prompts, is_common, parse_prompt, rare_prompts


class ShapesWorld(World):
    name = "shapes"
    model_dir = Path(__file__).resolve().parent / "model"

    pipeline_classes = {"ShapesPipeline": "find_rl.worlds.shapes.pipeline:ShapesPipeline"}

    def scorer_text(self) -> str:
        from find_rl.worlds.shapes.detector import DEFAULT_IOU, STRICT_IOU

        return f"the detector: IoU >= {DEFAULT_IOU}, strict {STRICT_IOU}"

    def prompts(self) -> list[str]:
        return all_prompts()

    def check_prompt(self, prompt: str) -> None:
        parse_prompt(prompt)

    def default_prompts(self) -> list[str]:
        return rare_prompts()

    def split_of(self, prompt: str) -> str:
        return "common" if is_common(prompt) else "rare"

    def score(self, images: np.ndarray, prompts: list[str], *, strict: bool = False) -> dict[str, np.ndarray]:
        """The detector (:func:`~find_rl.worlds.shapes.detector.score_images`) at IoU 0.7 (0.8 when ``strict``); its
        ``strict`` verdict is ``aligned`` with the shape template's IoU >= 0.8, from the same pass."""
        out = score_images(images, prompts, min_iou=STRICT_IOU if strict else DEFAULT_IOU)
        out["strict"] = out["aligned"] & (out["shape_iou"] >= STRICT_IOU)
        return out


WORLD = ShapesWorld()
