"""Where pipelines saved before the shapes world moved name their text encoder (``model_index.json``:
``["find_rl.shapes.text_encoder", "ShapesTextEncoder"]``); it lives in :mod:`find_rl.worlds.shapes.text_encoder`."""

from find_rl.worlds.shapes.text_encoder import ShapesTextEncoder

__all__ = ["ShapesTextEncoder"]
