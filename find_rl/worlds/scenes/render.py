"""Ground-truth scenes of the scenes world: placement, rasterisation and the frozen model's training data.

A scene is up to ``MAX_OBJECTS`` objects on a 32x32 black canvas, each a pure colour (its colour's channels +1, the
others -1; background -1 everywhere), drawn as the ``geometry.sprite`` of its shape and size. Placement rules
(``Scenes`` holds each object's box):

- side ``s`` uniform over ``SIZES``, box corner on integer pixels, every box inside the canvas with ``BORDER`` px
  to spare;
- the boxes of any two objects are ``GAP`` px apart along x or y (that many empty pixels between them);
- a position prompt's relation holds on the two boxes with GenEval score >= ``RELATION_MARGIN`` (the rule needs
  > 0.5: the margin keeps ground truth clear of the boundary);
- training data only: colours of colour-free objects follow ``splits.colour_probs`` (never an unseen pair), no two
  objects form a ``SWAPPED`` pair, and no two objects stand in an ``UNSEEN_RELATIONS`` relation with a score above
  ``FORBIDDEN_SLACK`` (well below the rule's 0.5).

Placement is rejection sampling, vectorised over the batch: objects are placed one after the other, each at the
first of several uniform candidate corners that keeps the rules; a scene where some object found none is redrawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from find_rl.worlds.scenes import splits
from find_rl.worlds.scenes.geometry import IMAGE_SIZE, SHAPES, SIZES, relation_scores, sprite
from find_rl.worlds.scenes.grammar import CATEGORIES, COLOUR_PATTERNS, COLOURS, MAX_OBJECTS, RELATIONS, Prompt, parse_prompt

BORDER = 1
GAP = 2
RELATION_MARGIN = 0.75
FORBIDDEN_SLACK = 0.3
_MAX_ROUNDS = 200
_CANDIDATES = 16


@dataclass
class Scenes:
    """``n`` scenes; per object slot ``(n, MAX_OBJECTS)`` arrays, ``shape == -1`` where a slot is empty."""

    shape: np.ndarray  # int64 index into SHAPES
    colour: np.ndarray  # int64 index into COLOURS
    x0: np.ndarray  # int64 left column of the box
    y0: np.ndarray  # int64 top row of the box (rows grow downwards)
    size: np.ndarray  # int64 side of the box, one of SIZES

    def __len__(self) -> int:
        return len(self.shape)

    @property
    def cx(self) -> np.ndarray:
        """Box centre x in pixel coordinates (the left edge of the canvas is 0)."""
        return self.x0 + self.size / 2

    @property
    def cy(self) -> np.ndarray:
        return self.y0 + self.size / 2


def _relation_index(p: Prompt) -> int:
    return RELATIONS.index(p.relation) if p.relation in RELATIONS else -1


def _draw_colours(shape: np.ndarray, colour: np.ndarray, rng: np.random.Generator, probs: np.ndarray) -> None:
    """Fill ``colour == -1`` slots of present objects in place, drawing from ``probs[shape]``."""
    free = (colour < 0) & (shape >= 0)
    cdf = np.cumsum(probs, axis=1)[shape[free]]
    colour[free] = np.minimum((rng.random(free.sum())[:, None] > cdf).sum(axis=1), len(COLOURS) - 1)


def _place(sc: Scenes, rows: np.ndarray, rel: np.ndarray, training: bool, rng: np.random.Generator,
           sizes: tuple[int, ...] = SIZES) -> np.ndarray:
    """Draw sides and box corners for the scenes ``rows`` in place, one object after the other: each object takes
    the first of ``_CANDIDATES`` uniform corners that keeps the border, gap, relation and training rules with the
    objects already placed. Returns which scenes found a place for every object (the others are redrawn)."""
    shape = sc.shape[rows]
    m, present = len(rows), shape >= 0
    s = np.asarray(sizes)[rng.integers(len(sizes), size=(m, MAX_OBJECTS))]
    corner = np.zeros((m, MAX_OBJECTS, 2), dtype=np.int64)
    placed = np.ones(m, dtype=bool)
    forbidden = splits.forbidden_relations()
    for k in range(MAX_OBJECTS):
        cand = rng.integers(BORDER, IMAGE_SIZE - BORDER - s[:, k, None, None] + 1, size=(m, _CANDIDATES, 2))
        centre = corner + s[..., None] / 2
        cand_centre = cand + s[:, k, None, None] / 2
        ok = np.ones((m, _CANDIDATES), dtype=bool)
        for j in range(k):
            sep = np.abs(cand_centre - centre[:, j, None, :]).max(axis=-1) - (s[:, j, None] + s[:, k, None]) / 2
            ok &= sep >= GAP
            both = present[:, j] & present[:, k] & training
            bad = forbidden[np.maximum(shape[:, j], 0), np.maximum(shape[:, k], 0)] & both[:, None]  # (m, 4)
            asks = (rel >= 0) if (j, k) == (0, 1) else np.zeros(m, dtype=bool)
            sub = np.flatnonzero(asks | bad.any(axis=1))  # the scenes that need GenEval's scores for this pair
            dims_j, dims_k = np.repeat(s[sub, j, None, None], 2, -1), np.repeat(s[sub, k, None, None], 2, -1)
            scores = relation_scores(centre[sub, j, None, :], dims_j, cand_centre[sub], dims_k)  # (sub, cand., 4): j of k
            asked = np.take_along_axis(scores, np.maximum(rel[sub], 0)[:, None, None], axis=-1)[..., 0]
            ok[sub] &= ~asks[sub, None] | (asked >= RELATION_MARGIN)
            ok[sub] &= ~(bad[sub, None, :] & (scores > FORBIDDEN_SLACK)).any(axis=-1)
        corner[:, k] = cand[np.arange(m), ok.argmax(axis=1)]
        placed &= ok.any(axis=1) | ~present[:, k]
    sc.size[rows], sc.x0[rows], sc.y0[rows] = np.where(present, s, 0), corner[..., 0], corner[..., 1]
    return placed


def sample_scenes(prompts: list[str | Prompt], rng: np.random.Generator, *, training: bool = False,
                  knobs: splits.Knobs = splits.Knobs()) -> Scenes:
    """One ground-truth scene per prompt.

    ``training=False`` draws colour-free objects uniformly over all colours and sides uniformly over ``SIZES``, and
    renders any prompt, held-out ones included (for evaluation). ``training=True`` keeps the held-out rules of the
    module docstring and draws sides from ``knobs.sizes``.
    """
    parsed = [parse_prompt(p) if isinstance(p, str) else p for p in prompts]
    n = len(parsed)
    shape = np.full((n, MAX_OBJECTS), -1, dtype=np.int64)
    colour = np.full((n, MAX_OBJECTS), -1, dtype=np.int64)
    for r, p in enumerate(parsed):
        for k, o in enumerate(p.instances):
            shape[r, k], colour[r, k] = o.shape, -1 if o.colour is None else o.colour
    rel = np.array([_relation_index(p) for p in parsed], dtype=np.int64)
    probs = splits.colour_probs(knobs) if training else np.full((len(SHAPES), len(COLOURS)), 1 / len(COLOURS))
    free = colour < 0
    _draw_colours(shape, colour, rng, probs)
    if training:  # redraw the free colours of scenes that pair a SWAPPED couple
        swapped = splits.swapped_codes()
        for _ in range(_MAX_ROUNDS):
            code = np.where(shape >= 0, colour * len(SHAPES) + shape, 0)
            bad = np.zeros(n, dtype=bool)
            for i in range(MAX_OBJECTS):
                for j in range(i + 1, MAX_OBJECTS):
                    bad |= (shape[:, j] >= 0) & swapped[code[:, i], code[:, j]]
            if not bad.any():
                break
            colour[bad] = np.where(free[bad], -1, colour[bad])
            _draw_colours(shape, colour, rng, probs)
        else:
            raise RuntimeError("could not draw colours that avoid the swapped pairs; check splits.SWAPPED")
    sc = Scenes(shape, colour, *(np.zeros((n, MAX_OBJECTS), dtype=np.int64) for _ in range(3)))
    pending = np.arange(n)
    for _ in range(_MAX_ROUNDS):
        pending = pending[~_place(sc, pending, rel[pending], training, rng, knobs.sizes if training else SIZES)]
        if len(pending) == 0:
            return sc
    raise RuntimeError(f"could not place {len(pending)} scenes in {_MAX_ROUNDS} rounds, e.g. {parsed[pending[0]].text!r}")


def render_scenes(sc: Scenes) -> np.ndarray:
    """Images ``(n, 3, 32, 32)`` float32 in [-1, 1] of the scenes."""
    n, side = len(sc), max(SIZES)
    bank = np.zeros((len(SHAPES), len(SIZES), side, side), dtype=bool)  # every sprite, top-left aligned
    for k in range(len(SHAPES)):
        for i, s in enumerate(SIZES):
            bank[k, i, :s, :s] = sprite(k, s)
    row, slot = np.nonzero(sc.shape >= 0)
    size_idx = np.searchsorted(SIZES, sc.size[row, slot])
    obj, i, j = np.nonzero(bank[sc.shape[row, slot], size_idx])  # objects lie inside the canvas and never overlap
    canvas = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.int8)  # colour index + 1; 0 is the background
    canvas[row[obj], sc.y0[row, slot][obj] + i, sc.x0[row, slot][obj] + j] = sc.colour[row, slot][obj] + 1
    out = np.empty((n, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    patterns = np.concatenate([np.zeros((1, 3)), np.array(COLOUR_PATTERNS)]).astype(np.float32) * 2 - 1
    for c in range(3):
        out[:, c] = patterns[:, c][canvas]
    return out


def render_prompts(prompts: list[str | Prompt], rng: np.random.Generator) -> np.ndarray:
    """One ground-truth image per prompt (any prompt, held-out ones included)."""
    return render_scenes(sample_scenes(prompts, rng))


def sample_training_prompts(n: int, rng: np.random.Generator, knobs: splits.Knobs = splits.Knobs()) -> list[str]:
    """``n`` prompts of the frozen model's training data: a category by ``knobs.category_mix``, then a trained
    prompt of it by ``splits.prompt_weight``."""
    table = _trained(knobs)
    mix = np.asarray(knobs.category_mix, dtype=np.float64)
    cats = rng.choice(len(CATEGORIES), size=n, p=mix / mix.sum())
    out = np.empty(n, dtype=object)
    for c, cat in enumerate(CATEGORIES):
        idx = np.flatnonzero(cats == c)
        texts, probs = table[cat]
        out[idx] = np.asarray(texts, dtype=object)[rng.choice(len(texts), size=len(idx), p=probs)]
    return out.tolist()


def sample_training_batch(n: int, rng: np.random.Generator, knobs: splits.Knobs = splits.Knobs()
                          ) -> tuple[np.ndarray, list[str]]:
    """``n`` training images ``(n, 3, 32, 32)`` and their prompts, never showing a held-out composition."""
    prompts = sample_training_prompts(n, rng, knobs)
    return render_scenes(sample_scenes(prompts, rng, training=True, knobs=knobs)), prompts


_TRAINED_CACHE: dict[splits.Knobs, dict[str, tuple[list[str], np.ndarray]]] = {}


def _trained(knobs: splits.Knobs) -> dict[str, tuple[list[str], np.ndarray]]:
    if knobs not in _TRAINED_CACHE:
        _TRAINED_CACHE[knobs] = splits.trained_prompts(knobs)
    return _TRAINED_CACHE[knobs]
