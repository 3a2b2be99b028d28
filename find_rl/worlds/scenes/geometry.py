"""Exact geometry of the scenes world: the sprite of each shape and size, and GenEval's position rule.

Every object is a sprite: a shape drawn in a square box of odd side ``s`` (``SIZES``: radius 4.5 to 6.5 px) whose
top-left corner sits on an integer pixel, so an object's pixels depend only on its shape and size, and its
rasterised box is exactly ``s x s``. A pixel is on when its centre lies inside the shape (no anti-aliasing); with
offsets ``(dx, dy)`` of the pixel centre from the box centre (``y`` grows downwards) and ``h = s / 2``:

- circle:   ``dx^2 + dy^2 <= (h - 1/4)^2`` (the quarter pixel keeps the disc at ~72-75% of its box, near pi/4,
  where ``h`` itself would fill 85% of a 9-px box and look like a square with clipped corners)
- square:   ``|dx| <= h`` and ``|dy| <= h``
- triangle: apex up, ``|dy| <= h`` and ``|dx| <= (dy + h) / 2`` (base ``s`` wide at the bottom, one-pixel apex)
- cross:    a plus sign, ``|dx| <= s/8`` and ``|dy| <= h``, or ``|dy| <= s/8`` and ``|dx| <= h`` (3-px arms)

Odd sides put the box centre on a pixel centre, so every sprite is symmetric and fills its whole box. The fourth
shape is a cross rather than a 2:1 bar (which differs from a square only in aspect); its sprite's IoU with any other
shape's is at most 0.74 (the circle at side 9).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
IMAGE_SIZE = 32
#: Sides of an object's square box, in pixels.
SIZES: tuple[int, ...] = (9, 11, 13)
#: GenEval's position rule: the centre offset is shrunk by this fraction of the summed box sizes, per axis.
POSITION_SHRINK = 0.1


def inside(shape: int, dx: np.ndarray, dy: np.ndarray, s: float) -> np.ndarray:
    """Whether the points ``(dx, dy)`` (offsets from the box centre) are inside shape ``shape`` of box side ``s``."""
    h = s / 2.0
    if shape == 0:
        return dx * dx + dy * dy <= (h - 0.25) ** 2
    if shape == 1:
        return (np.abs(dx) <= h) & (np.abs(dy) <= h)
    if shape == 2:
        return (np.abs(dy) <= h) & (np.abs(dx) <= (dy + h) / 2.0)
    if shape == 3:
        a, b = np.abs(dx), np.abs(dy)
        return ((a <= s / 8.0) & (b <= h)) | ((b <= s / 8.0) & (a <= h))
    raise ValueError(f"unknown shape index {shape}; the scenes world has {len(SHAPES)} shapes: {', '.join(SHAPES)}")


@lru_cache(maxsize=None)
def sprite(shape: int, s: int) -> np.ndarray:
    """The ``(s, s)`` boolean pixels of ``shape`` drawn in a box of side ``s`` (read-only)."""
    c = np.arange(s) + 0.5 - s / 2.0
    out = inside(shape, c[None, :], c[:, None], s)
    out.flags.writeable = False
    return out


def relation_scores(centre_a: np.ndarray, dims_a: np.ndarray, centre_b: np.ndarray, dims_b: np.ndarray) -> np.ndarray:
    """GenEval's position rule (``relative_position`` in geneval ``evaluation/evaluate_images.py``): A's scores for
    standing left of, right of, above and below B (``grammar.RELATIONS`` order), ``(..., 4)``; a relation holds
    when its score is > 0.5.

    The offset between the box centres (``(x, y)``, last axis) is shrunk per axis by ``POSITION_SHRINK`` times the
    summed box dimensions (width, height) and divided by the length of the unshrunk offset. Boxes whose shrunk
    offset vanishes (< 1e-3 on both axes) stand in no relation (all scores 0).
    """
    offset = np.asarray(centre_a, dtype=np.float64) - np.asarray(centre_b, dtype=np.float64)
    shrunk = np.maximum(np.abs(offset) - POSITION_SHRINK * (np.asarray(dims_a) + np.asarray(dims_b)), 0) * np.sign(offset)
    norm = np.sqrt((offset * offset).sum(axis=-1, keepdims=True))
    unit = np.where(norm > 0, shrunk / np.where(norm > 0, norm, 1.0), 0.0)
    unit = np.where(np.all(np.abs(shrunk) < 1e-3, axis=-1, keepdims=True), 0.0, unit)
    return np.stack([-unit[..., 0], unit[..., 0], -unit[..., 1], unit[..., 1]], axis=-1)
