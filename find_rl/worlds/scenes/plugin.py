"""The scenes world behind the world seam (:class:`find_rl.worlds.World`): 2,712 compositional prompts in GenEval's six
categories, held-out splits, 32x32 scenes, GenEval's rules on exact geometry."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from find_rl.worlds import World
from find_rl.worlds.scenes import scorer
from find_rl.worlds.scenes.grammar import CATEGORIES, all_prompts, parse_prompt
from find_rl.worlds.scenes.splits import split_of


#: the training reward of an image that is not aligned: this share of its shaped clause credit (the scorer's
#: ``reward``), so success (1) stands clear of every partial one (at most 0.5), as in the shapes world
UNALIGNED_SHARE = 0.5


class ScenesWorld(World):
    name = "scenes"
    model_dir = Path(__file__).resolve().parent / "model"

    pipeline_classes = {"ScenesPipeline": "find_rl.worlds.scenes.pipeline:ScenesPipeline"}

    def prompts(self) -> list[str]:
        return all_prompts()

    def scorer_text(self) -> str:
        from find_rl.worlds.scenes.detect import DEFAULT_IOU, STRICT_IOU

        return f"the scenes world's exact scorer: GenEval's rules, template IoU >= {DEFAULT_IOU}, strict {STRICT_IOU}"

    def check_prompt(self, prompt: str) -> None:
        parse_prompt(prompt)

    def default_prompts(self) -> list[str]:
        from find_rl.worlds.scenes.evaluation_set import default_train_prompts

        return default_train_prompts()

    def policy_training_prompts(self) -> list[str]:
        """The common and rare prompts (1,199; never the policy split or a held-out one), ordered by the CRC-32 of
        their text, so that the first N spread over the categories."""
        from find_rl.worlds.scenes.splits import prompts_by_split

        by_split = prompts_by_split()
        return sorted(by_split["common"] + by_split["rare"], key=lambda t: (zlib.crc32(t.encode()), t))

    def eval_prompts(self) -> list[str]:
        from find_rl.worlds.scenes.evaluation_set import default_eval_prompts

        return default_eval_prompts()

    def split_of(self, prompt: str) -> str:
        return split_of(prompt)

    def category_of(self, prompt: str) -> str | None:
        return parse_prompt(prompt).category

    def score(self, images: np.ndarray, prompts: list[str], *, strict: bool = False) -> dict[str, np.ndarray]:
        """:func:`find_rl.worlds.scenes.scorer.score`: 1 for an aligned image (strict: a strict pass), else
        :data:`UNALIGNED_SHARE` x its shaped clause credit."""
        s = scorer.score(images, prompts)
        aligned = s.strict if strict else s.aligned
        reward = np.where(aligned, 1.0, UNALIGNED_SHARE * s.reward).astype(np.float32)
        return {"score": reward, "aligned": aligned, "strict": s.strict}

    def factors(self, images: np.ndarray, prompts: list[str]) -> np.ndarray:
        """Each prompt object's matched (x centre, y centre, box side), flattened: ``(N, 3 * MAX_OBJECTS)``, NaN where
        the prompt has fewer objects or an object is unmatched."""
        f = scorer.score(images, prompts).factors
        return f.reshape(len(f), -1)


assert set(CATEGORIES) >= {"single_object", "two_object", "counting", "colors", "position", "color_attr"}
WORLD = ScenesWorld()
