"""The embedded "shapes" world: vocabulary, prompts and the skewed procedural dataset.

Images are 16x16 RGB in [-1, 1] on a black background, one pure-colour shape each (the shape's colour
channel is +1, the other two are -1). Three shapes x three colours give nine combinations, indexed
``k = shape * 3 + colour``. The training distribution is deliberately skewed ("diagonal" imbalance): the
three combinations circle-red, square-green and triangle-blue are common (~29% each) and the other six are
rare (``rare_p`` each, 2% by default). A compositional text encoder then lets the frozen model drift from a
rare pair ("a green circle") to the common shape of that colour (a green square): the failure FIND fixes.

Geometry (pixel-index coordinates, centre ``(cx, cy)``, size ``r``):
- circle: ``(x - cx)^2 + (y - cy)^2 <= r^2``
- square: ``|x - cx| <= 0.85 r`` and ``|y - cy| <= 0.85 r``
- triangle (apex up): ``cy - r <= y <= cy + r`` and ``|x - cx| <= (y - cy + r) / 2``

``r ~ U(4, 6.5)`` (smaller circles rasterise like squares), ``cx, cy ~ U(r, 15 - r)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COLOURS: tuple[str, ...] = ("red", "green", "blue")
IMAGE_SIZE = 16
#: The combinations that dominate the training data, as (shape, colour) indices.
COMMON: tuple[tuple[int, int], ...] = ((0, 0), (1, 1), (2, 2))
#: Words a prompt may contain besides one shape and one colour word.
STOPWORDS = frozenset({"a", "an", "the", "one", "single", "of", "image", "picture", "photo"})


@dataclass(frozen=True)
class Attributes:
    """What a shapes prompt asks for; ``None`` means "any"."""

    shape: int | None
    colour: int | None

    @property
    def text(self) -> str:
        words = ["a"]
        if self.colour is not None:
            words.append(COLOURS[self.colour])
        words.append(SHAPES[self.shape] if self.shape is not None else "shape")
        return " ".join(words)


def parse_prompt(prompt: str) -> Attributes:
    """Parse "a green circle" into attributes; raise a one-line ``ValueError`` on anything else."""
    if not isinstance(prompt, str):
        raise ValueError(f"prompt must be a string, got {type(prompt).__name__}")
    words = [w for w in prompt.lower().replace(",", " ").replace(".", " ").split() if w not in STOPWORDS]
    shape = colour = None
    for w in words:
        if w in SHAPES and shape is None:
            shape = SHAPES.index(w)
        elif w in COLOURS and colour is None:
            colour = COLOURS.index(w)
        elif w in SHAPES or w in COLOURS:
            raise ValueError(f"prompt {prompt!r} names more than one shape or colour; use one of each, e.g. 'a red square'")
        elif w != "shape":
            raise ValueError(
                f"unknown word {w!r} in prompt {prompt!r}; the shapes model knows {', '.join(COLOURS)} and "
                f"{', '.join(SHAPES)}, e.g. 'a green circle'"
            )
    return Attributes(shape, colour)


def all_prompts() -> list[str]:
    """The nine shape-colour prompts, in combination-index order."""
    return [Attributes(s, c).text for s in range(len(SHAPES)) for c in range(len(COLOURS))]


def is_common(prompt: str) -> bool:
    a = parse_prompt(prompt)
    return (a.shape, a.colour) in COMMON


def rare_prompts() -> list[str]:
    return [p for p in all_prompts() if not is_common(p)]


def combination_probs(rare_p: float = 0.02) -> np.ndarray:
    """Probability of each of the nine combinations under the skewed training distribution."""
    n_rare = len(SHAPES) * len(COLOURS) - len(COMMON)
    if not 0.0 <= rare_p * n_rare < 1.0:
        raise ValueError(f"rare_p={rare_p} leaves no mass for the common combinations; use rare_p < {1 / n_rare:.3f}")
    p = np.full(len(SHAPES) * len(COLOURS), rare_p)
    for s, c in COMMON:
        p[s * len(COLOURS) + c] = (1.0 - rare_p * n_rare) / len(COMMON)
    return p


def shape_mask(shape: int, cx: float, cy: float, r: float, size: int = IMAGE_SIZE) -> np.ndarray:
    """Boolean ``(size, size)`` mask of one shape (see the module docstring for the geometry)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    if shape == 0:
        return (x - cx) ** 2 + (y - cy) ** 2 <= r * r
    if shape == 1:
        return (np.abs(x - cx) <= 0.85 * r) & (np.abs(y - cy) <= 0.85 * r)
    if shape == 2:
        return (y >= cy - r) & (y <= cy + r) & (np.abs(x - cx) <= (y - cy + r) / 2.0)
    raise ValueError(f"unknown shape index {shape}")


def render(shape: int, colour: int, cx: float, cy: float, r: float, size: int = IMAGE_SIZE) -> np.ndarray:
    """One ``(3, size, size)`` float32 image in [-1, 1]."""
    img = -np.ones((3, size, size), dtype=np.float32)
    img[colour][shape_mask(shape, cx, cy, r, size)] = 1.0
    return img


def make_dataset(n: int, *, rare_p: float = 0.02, seed: int = 0, balanced: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images ``(n, 3, 16, 16)`` and their combination indices ``(n,)``, reproducible from ``seed``.

    ``balanced=True`` draws the nine combinations uniformly (used to test the detector).
    """
    rng = np.random.default_rng(seed)
    probs = np.full(9, 1 / 9) if balanced else combination_probs(rare_p)
    combos = rng.choice(9, size=n, p=probs)
    radii = rng.uniform(4.0, 6.5, size=n)
    u = rng.uniform(0.0, 1.0, size=(n, 2))
    images = np.empty((n, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    for i in range(n):
        r = radii[i]
        cx, cy = r + u[i] * (IMAGE_SIZE - 1 - 2 * r)
        images[i] = render(combos[i] // 3, combos[i] % 3, cx, cy, r)
    return images, combos
