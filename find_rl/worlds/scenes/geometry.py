"""Exact geometry of the scenes world: which pixels a shape of a given centre and size covers.

Coordinates: pixel ``(row i, column j)`` covers ``[j, j + 1) x [i, i + 1)`` and is on when its centre
``(x, y) = (j + 0.5, i + 0.5)`` lies inside the shape (no anti-aliasing: a pixel is fully on or off). ``y`` grows
downwards. Every shape is defined by its centre ``(cx, cy)`` and its size ``s``, the side of its bounding square,
so a circle, square, triangle and cross of the same size have the same (square) box:

- circle:   ``dx^2 + dy^2 <= (s/2)^2``
- square:   ``|dx| <= s/2`` and ``|dy| <= s/2``
- triangle: apex up, ``|dy| <= s/2`` and ``|dx| <= (dy + s/2) / 2`` (base ``s`` wide at the bottom)
- cross:    a plus sign, ``|dx| <= s/6`` and ``|dy| <= s/2``, or ``|dy| <= s/6`` and ``|dx| <= s/2`` (arms s/3 wide)

with ``dx = x - cx`` and ``dy = y - cy``. The renderer draws with these predicates and the scorer fits templates
drawn with the same predicates, so a ground-truth object matches its own template exactly.
"""

from __future__ import annotations

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
IMAGE_SIZE = 32
#: Range of the object size ``s`` (side of the bounding square, in pixels); radius = s / 2 >= 4.5.
SIZE_RANGE: tuple[float, float] = (9.0, 13.0)


def inside(shape: int, dx: np.ndarray, dy: np.ndarray, s: np.ndarray | float) -> np.ndarray:
    """Whether the points ``(dx, dy)`` (offsets from the centre) are inside shape ``shape`` of size ``s``.

    Broadcasts ``dx``, ``dy`` and ``s`` against each other.
    """
    h = np.asarray(s) / 2.0
    if shape == 0:
        return dx * dx + dy * dy <= h * h
    if shape == 1:
        return (np.abs(dx) <= h) & (np.abs(dy) <= h)
    if shape == 2:
        return (np.abs(dy) <= h) & (np.abs(dx) <= (dy + h) / 2.0)
    if shape == 3:
        a, b = np.abs(dx), np.abs(dy)
        return ((a <= h / 3.0) & (b <= h)) | ((b <= h / 3.0) & (a <= h))
    raise ValueError(f"unknown shape index {shape}; the scenes world has {len(SHAPES)} shapes: {', '.join(SHAPES)}")


def shape_masks(shape: np.ndarray, cx: np.ndarray, cy: np.ndarray, s: np.ndarray, *, x0: np.ndarray, y0: np.ndarray,
                height: int, width: int) -> np.ndarray:
    """Masks ``(n, height, width)`` of ``n`` shapes, each drawn in a window whose top-left pixel is ``(y0, x0)``.

    ``shape``, ``cx``, ``cy``, ``s``, ``x0``, ``y0`` are 1-D arrays of length ``n`` (window origins are integer
    pixel indices). The work is vectorised per shape kind.
    """
    shape = np.asarray(shape)
    xs = np.arange(width, dtype=np.float32) + 0.5
    ys = np.arange(height, dtype=np.float32) + 0.5
    out = np.zeros((len(shape), height, width), dtype=bool)
    for k in range(len(SHAPES)):
        idx = np.flatnonzero(shape == k)
        if len(idx) == 0:
            continue
        dx = (xs[None, None, :] + x0[idx, None, None] - cx[idx, None, None]).astype(np.float32)
        dy = (ys[None, :, None] + y0[idx, None, None] - cy[idx, None, None]).astype(np.float32)
        out[idx] = inside(k, dx, dy, s[idx, None, None].astype(np.float32))
    return out


#: GenEval's position rule: the centre offset is shrunk by this fraction of the summed box sizes, per axis.
POSITION_SHRINK = 0.1


def relation_scores(centre_a: np.ndarray, dims_a: np.ndarray, centre_b: np.ndarray, dims_b: np.ndarray) -> np.ndarray:
    """GenEval's position rule (``relative_position`` in geneval ``evaluation/evaluate_images.py``): A's scores for
    standing left of, right of, above and below B, ``(..., 4)``; a relation holds when its score is > 0.5.

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
