"""Embedded procedural worlds behind one seam: exact data generators and scorers to train and judge small diffusion models.

A world is a :class:`World`: its prompts and named splits, prompt validation, the exact scorer (aligned, strict and a
shaped training reward), the per-image factors its diversity is measured on, its frozen model's folder and pipeline
class, and its reference sets. ``shapes`` (:mod:`find_rl.worlds.shapes`: 9 prompts, 16x16, the fast world of the
tests and quick runs) and ``scenes`` (:mod:`find_rl.worlds.scenes`: 2,712 compositional prompts in GenEval's six
categories, 32x32) implement it. Every module outside a world's folder reaches it only through :func:`get_world`
(``tests/test_layers.py`` checks this); the commands take it by name (``--world``).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np

from find_rl.core.settings import WORLD_NAMES

#: world name -> the module that defines ``WORLD`` (imported on first use): ``find_rl/worlds/<name>/plugin.py``
WORLDS = {name: f"find_rl.worlds.{name}.plugin" for name in WORLD_NAMES}


class World:
    """The seam every embedded world implements (attributes and methods below; nothing here is shapes-specific)."""

    #: the world's name (``--world``), also the alias of its shipped model (``--model NAME``) and of its rewards
    name: str = ""
    #: where its frozen model is shipped (a diffusers pipeline folder)
    model_dir: Path = Path()
    #: ``model_index.json`` ``_class_name`` -> ``"module:Class"`` of a world's own pipeline class (imported on load)
    pipeline_classes: dict[str, str] = {}

    # ------------------------------------------------------------------------------------------------ prompts
    def prompts(self) -> list[str]:
        """Every prompt of the world, in a fixed order."""
        raise NotImplementedError

    def check_prompt(self, prompt: str) -> None:
        """A one-line ``ValueError`` naming the unknown word or the structural error; None when the world can score it."""
        raise NotImplementedError

    def default_prompts(self) -> list[str]:
        """What ``train`` trains when ``--prompts`` is not given (prompts where the frozen model fails)."""
        raise NotImplementedError

    def policy_training_prompts(self) -> list[str]:
        """What a prompt-conditioned policy (amortised, or the flow on the embedding) trains on when ``--prompts`` is
        not given: prompts the frozen model was trained on, never a split held out from noise policies, in a fixed
        order whose first N are a spread subset (``--train-prompts N``). Default: :meth:`default_prompts`."""
        return self.default_prompts()

    def eval_prompts(self) -> list[str]:
        """The fixed default evaluation set of ``evaluate`` (stratified by split x category where the world has them)."""
        return self.prompts()

    def split_of(self, prompt: str) -> str:
        """``common``, ``rare``, ``policy``, or a held-out split's name."""
        raise NotImplementedError

    def category_of(self, prompt: str) -> str | None:
        """GenEval's task name of the prompt (single_object, two_object, counting, colors, position, color_attr), or None."""
        return None

    # ------------------------------------------------------------------------------------------------ scoring
    def score(self, images: np.ndarray, prompts: list[str], *, strict: bool = False) -> dict[str, np.ndarray]:
        """The exact scorer on ``(N, 3, H, W)`` images in [-1, 1]: float32 ``score`` (the shaped training reward, 1 on
        success), bool ``aligned`` and bool ``strict`` (the stricter verdict of the same pass); ``strict=True`` makes
        ``aligned`` and ``score`` the strict ones. Worlds may add per-image results (bool or float arrays)."""
        raise NotImplementedError

    def scorer_text(self) -> str:
        """How reports name the scorer and its thresholds, e.g. "the detector: IoU >= 0.7, strict 0.8"."""
        return f"the {self.name} world's exact scorer"

    def factors(self, images: np.ndarray, prompts: list[str]) -> np.ndarray | None:
        """Per-image factors ``(N, K)`` diversity is measured on (positions, sizes; NaN where undefined), or None when
        the world measures diversity on pixels only."""
        return None

    # ------------------------------------------------------------------------------------------------ references
    def reference(self, name: str) -> dict:
        """A JSON reference shipped in the model folder (``aligned_ceiling``, ``baseline``); ``{}`` when none."""
        path = self.model_dir / f"{name}.json"
        return json.loads(path.read_text()) if path.is_file() else {}


def get_world(name: str) -> World:
    """The world named ``name``; a one-line ``ValueError`` for any other name."""
    if name not in WORLDS:
        raise ValueError(f"unknown world {name!r}; use one of {', '.join(WORLD_NAMES)}")
    return importlib.import_module(WORLDS[name]).WORLD


def pipeline_class(world: World, class_name: str) -> type:
    """The pipeline class a world's model folder names (imported here, on load only)."""
    module, _, attr = world.pipeline_classes[class_name].partition(":")
    return getattr(importlib.import_module(module), attr)


def world_of_model(model: str) -> World | None:
    """The world whose shipped model ``model`` is (by alias or folder, or by its pipeline class), else None."""
    if model in WORLDS:
        return get_world(model)
    index = Path(model) / "model_index.json"
    if index.is_file():
        try:
            cls = json.loads(index.read_text()).get("_class_name")
        except json.JSONDecodeError:
            return None
        for name in WORLDS:
            world = get_world(name)
            if cls in world.pipeline_classes:
                return world
    return None
