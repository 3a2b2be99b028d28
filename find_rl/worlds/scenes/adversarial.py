"""Hand-made hard negatives for the scenes scorer: images that look close to their prompt but are wrong.

Each case is an image that a lenient scorer could accept for its prompt; the exact scorer must reject every one
(``tests/test_scenes_world.py``, ``bench/bench_scenes_world.py``). The cases cover the known failure of the
shapes world's detector (a box template fitted inside the object's own bounding box accepted a 2:1 bar as a
square and a rounded square as a circle) and GenEval's failure modes: extra or missing objects, merged objects,
colour swaps and reversed relations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from find_rl.worlds.scenes.geometry import IMAGE_SIZE, SHAPES, SIZES, sprite
from find_rl.worlds.scenes.grammar import COLOUR_PATTERNS, COLOURS


@dataclass(frozen=True)
class AdversarialCase:
    name: str
    image: np.ndarray  # (3, 32, 32) float32 in [-1, 1]
    prompt: str


def blank() -> np.ndarray:
    return -np.ones((3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)


def stamp(img: np.ndarray, mask: np.ndarray, colour: str, x0: int, y0: int, value: float = 1.0) -> np.ndarray:
    """Set the channels of ``colour`` to ``value`` where ``mask`` (placed with its top-left at ``(x0, y0)``) is on."""
    h, w = mask.shape
    for ch, on in enumerate(COLOUR_PATTERNS[COLOURS.index(colour)]):
        if on:
            img[ch, y0 : y0 + h, x0 : x0 + w][mask] = value
    return img


def put(img: np.ndarray, shape: str, colour: str, x0: int, y0: int, s: int = 11, value: float = 1.0) -> np.ndarray:
    """Draw a world object (the sprite of ``shape`` with side ``s``) with its box's top-left at ``(x0, y0)``."""
    return stamp(img, sprite(SHAPES.index(shape), s), colour, x0, y0, value)


def rounded_square(s: int, rho: float) -> np.ndarray:
    """An ``s x s`` square whose corners are rounded with radius ``rho`` (pixel centres inside)."""
    c = np.abs(np.arange(s) + 0.5 - s / 2)
    dx, dy, inner = c[None, :], c[:, None], s / 2 - rho
    return (np.maximum(dx - inner, 0) ** 2 + np.maximum(dy - inner, 0) ** 2) <= rho**2


def _white_circle() -> np.ndarray:
    img = blank()
    img[:, 8:19, 8:19][:, sprite(SHAPES.index("circle"), 11)] = 1.0
    return img


def adversarial_cases() -> list[AdversarialCase]:
    """Every hard negative, in a fixed order."""
    cases = [AdversarialCase(f"bar {h}x{w} as a square", stamp(blank(), np.ones((h, w), bool), "red", 8, 8), "a red square")
             for h, w in ((6, 12), (12, 6), (5, 10))]
    cases += [AdversarialCase(f"rounded square s={s} rho={rho:.2f} as a circle",
                              stamp(blank(), rounded_square(s, rho), "red", 9, 9), "a red circle")
              for s in SIZES for rho in (s / 8, s / 6, s / 4, s / 3)]
    one = lambda: put(blank(), "circle", "red", 3, 3)  # noqa: E731
    pair = lambda a, b: put(put(blank(), *a), *b)  # noqa: E731
    four = put(put(pair(("circle", "red", 2, 2), ("circle", "red", 18, 2)), "circle", "red", 2, 18), "circle", "red", 18, 18)
    cases += [AdversarialCase(*c) for c in [
        ("extra faint object (below the foreground)", put(one(), "square", "blue", 18, 18, value=-0.2), "a red circle"),
        ("extra dim object (v = 0.3)", put(one(), "square", "blue", 18, 18, value=0.3), "a red circle"),
        ("faint smear (3x3 at -0.3)", stamp(one(), np.ones((3, 3), bool), "green", 22, 22, value=-0.3), "a red circle"),
        ("bright speck (2 px)", stamp(one(), np.ones((1, 2), bool), "green", 25, 25), "a red circle"),
        ("touching objects (merged)", pair(("circle", "red", 4, 10), ("square", "blue", 15, 10)),
         "a red circle and a blue square"),
        ("touching twins (merged)", pair(("circle", "red", 4, 10), ("circle", "red", 15, 10)), "two red circles"),
        ("2 drawn, 3 asked", pair(("circle", "red", 2, 2), ("circle", "red", 18, 18)), "three red circles"),
        ("4 drawn, 3 asked", four, "three red circles"),
        ("colours swapped", pair(("circle", "blue", 2, 10), ("square", "red", 18, 10)), "a red circle and a blue square"),
        ("relation reversed", pair(("circle", "red", 18, 10), ("square", "blue", 2, 10)),
         "a red circle left of a blue square"),
        ("relation reversed, vertical", pair(("cross", "red", 10, 18), ("triangle", "cyan", 10, 2)),
         "a red cross above a cyan triangle"),
        ("two-colour object", stamp(put(blank(), "square", "red", 8, 8), np.ones((11, 3), bool), "blue", 8, 8),
         "a red square"),
        ("white object", _white_circle(), "a red circle"),
    ]]
    return cases
