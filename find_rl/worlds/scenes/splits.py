"""Held-out splits and frequency knobs of the scenes world, fixed by design and deterministic.

Held-out compositions are facts about *scenes*, not phrasings: "a red circle left of a blue square" and "a blue
square right of a red circle" describe one scene, and the training-data generator never renders a held-out scene
under any prompt (colours drawn for colour-free prompts and placements of "and" prompts included):

- ``unseen_pairs``: the colour-shape pairs ``UNSEEN_PAIRS`` are never drawn. Prompts naming one are held out.
- ``unseen_relations``: for each ``(shape a, relation, shape b)`` of ``UNSEEN_RELATIONS`` (any colours), no training
  scene has an ``a`` placed that way of a ``b``, not even loosely. Position prompts asking for it are held out.
- ``swapped``: the object pairs ``SWAPPED`` (e.g. a yellow square with a red circle) never appear together; their
  colour-swapped twins (a red square with a yellow circle) are trained. Two-object prompts naming one are held out.
- ``policy``: about ``POLICY_FRACTION`` of the remaining compositions of each category (phrasings of one scene stay
  together), chosen by a CRC-32 hash of the composition. The frozen model trains on them; a noise policy must not.

Frequency knobs (``Knobs``) set how often the training data shows each remaining composition. A prompt's weight is
the product of its rare factors, floored at ``Knobs.floor``; it is ``rare`` when that product is below 1, else
``common``. The factors:

- colour: a named colour that is not one of its shape's two ``PREFERRED_COLOURS`` (``rare_colour``); colour-free
  objects are drawn in their shape's colours with the same weights, so those pairs are rare in the images too;
- side: a relation that puts both objects on their non-preferred side (``LEFT_SHAPES`` like the left, the others
  the right; ``TOP_SHAPES`` the top), e.g. "a triangle left of a circle" (``rare_side``);
- count: three objects in counting (``rare_count``); single: ``RARE_SINGLE_SHAPES`` alone, "a cross" (``rare_single``);
- pair: the shape pairs ``RARE_SHAPE_PAIRS`` in one two-object scene (``rare_pair``).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from find_rl.worlds.scenes.grammar import CATEGORIES, COLOURS, RELATIONS, Prompt, all_prompts, parse_prompt
from find_rl.worlds.scenes.geometry import SHAPES, SIZES

HELD_OUT_SPLITS: tuple[str, ...] = ("unseen_pairs", "unseen_relations", "swapped")
SPLITS: tuple[str, ...] = ("common", "rare", "policy", *HELD_OUT_SPLITS)
TRAINED_SPLITS: tuple[str, ...] = ("common", "rare", "policy")  # what the frozen model's training data covers
POLICY_FRACTION = 0.1

_C, _S = {c: i for i, c in enumerate(COLOURS)}, {s: i for i, s in enumerate(SHAPES)}
#: (colour, shape) index pairs never rendered for training: each colour once, no shape's preferred colour.
UNSEEN_PAIRS: frozenset[tuple[int, int]] = frozenset((_C[c], _S[s]) for c, s in (
    ("green", "circle"), ("cyan", "circle"), ("blue", "square"), ("red", "triangle"), ("yellow", "triangle"),
    ("magenta", "cross")))
#: (shape a, "left of" | "above", shape b): no training scene places an a that way of a b.
UNSEEN_RELATIONS: frozenset[tuple[int, str, int]] = frozenset((_S[a], r, _S[b]) for a, r, b in (
    ("circle", "left of", "triangle"), ("triangle", "left of", "square"), ("cross", "above", "square"),
    ("square", "above", "circle")))
#: Object pairs ((colour, shape), (colour, shape)) never drawn together; their colour swaps are trained.
SWAPPED: frozenset[frozenset[tuple[int, int]]] = frozenset(
    frozenset(((_C[c1], _S[s1]), (_C[c2], _S[s2]))) for c1, s1, c2, s2 in (
    ("yellow", "square", "red", "circle"), ("blue", "circle", "magenta", "triangle"), ("cyan", "square", "green", "cross"),
    ("blue", "cross", "green", "triangle"), ("green", "triangle", "magenta", "square"), ("yellow", "circle", "red", "cross")))

PREFERRED_COLOURS: dict[int, tuple[int, int]] = {
    _S["circle"]: (_C["red"], _C["yellow"]), _S["square"]: (_C["green"], _C["cyan"]),
    _S["triangle"]: (_C["blue"], _C["magenta"]), _S["cross"]: (_C["red"], _C["blue"])}
LEFT_SHAPES = frozenset({_S["circle"], _S["square"]})
TOP_SHAPES = frozenset({_S["circle"], _S["triangle"]})
RARE_SHAPE_PAIRS = frozenset({frozenset({_S["circle"], _S["cross"]}), frozenset({_S["square"], _S["triangle"]})})
RARE_SINGLE_SHAPES = frozenset({_S["cross"]})


@dataclass(frozen=True)
class Knobs:
    """Frequencies of the training data (see the module docstring); the defaults are the world's."""

    #: (Steeper since the second frozen model: at the first knobs, x0.1 / x0.2 and floor 0.02, a model that learned
    #: the world drew rare prompts nearly as well as common ones.)
    rare_colour: float = 0.01
    rare_side: float = 0.03
    rare_count: float = 0.05
    rare_single: float = 0.05
    rare_pair: float = 0.05
    floor: float = 0.0005
    #: Share of each category in the training data, in ``CATEGORIES`` order.
    category_mix: tuple[float, ...] = (0.05, 0.1, 0.15, 0.15, 0.35, 0.2)
    #: Sprite sides drawn in the training data (a subset of ``geometry.SIZES``; evaluation scenes use them all).
    sizes: tuple[int, ...] = SIZES

    def __post_init__(self) -> None:
        if not self.sizes or not set(self.sizes) <= set(SIZES):
            raise ValueError(f"training sizes must be a non-empty subset of {SIZES}, got {self.sizes}")


def canonical(prompt: Prompt) -> Prompt:
    """The one phrasing of a prompt's scene: "and" objects sorted, "right of"/"below" turned into "left of"/"above"."""
    if len(prompt.objects) == 1:
        return prompt
    a, b = prompt.objects
    key = lambda o: (o.shape, -1 if o.colour is None else o.colour)  # noqa: E731
    if prompt.relation == "and":
        return Prompt(tuple(sorted((a, b), key=key)), "and")
    if prompt.relation in ("right of", "below"):
        return Prompt((b, a), "left of" if prompt.relation == "right of" else "above")
    return prompt


def _held_out(p: Prompt) -> str | None:
    if any(o.colour is not None and (o.colour, o.shape) in UNSEEN_PAIRS for o in p.objects):
        return "unseen_pairs"
    c = canonical(p)
    if c.relation not in (None, "and") and (c.objects[0].shape, c.relation, c.objects[1].shape) in UNSEEN_RELATIONS:
        return "unseen_relations"
    if len(p.objects) == 2 and p.objects[0].colour is not None:
        if frozenset((o.colour, o.shape) for o in p.objects) in SWAPPED:
            return "swapped"
    return None


def rare_factor(p: Prompt, knobs: Knobs = Knobs()) -> float:
    """Product of the prompt's rare factors (1 for a common prompt), before the floor."""
    w = 1.0
    for o in p.objects:
        if o.colour is not None and o.colour not in PREFERRED_COLOURS[o.shape]:
            w *= knobs.rare_colour
    if len(p.objects) == 1:
        o = p.objects[0]
        w *= knobs.rare_count if o.count == 3 else 1.0
        w *= knobs.rare_single if (o.count == 1 and o.colour is None and o.shape in RARE_SINGLE_SHAPES) else 1.0
        return w
    a, b = canonical(p).objects
    w *= knobs.rare_pair if frozenset({a.shape, b.shape}) in RARE_SHAPE_PAIRS else 1.0
    if p.relation in RELATIONS:
        side = LEFT_SHAPES if canonical(p).relation == "left of" else TOP_SHAPES
        w *= knobs.rare_side if (a.shape not in side and b.shape in side) else 1.0
    return w


def prompt_weight(p: Prompt | str, knobs: Knobs = Knobs()) -> float:
    """Relative frequency of a trained prompt within its category (``max(floor, rare_factor)``)."""
    p = parse_prompt(p) if isinstance(p, str) else p
    return max(knobs.floor, rare_factor(p, knobs))


@lru_cache(maxsize=1)
def _policy_keys() -> frozenset[str]:
    """``POLICY_FRACTION`` of the trained compositions of each (category, common/rare) stratum, and at least one per
    category (taken from its larger stratum, so that a small category keeps both common and rare prompts)."""
    strata: dict[tuple[str, bool], set[str]] = {(c, r): set() for c in CATEGORIES for r in (False, True)}
    for text in all_prompts():
        p = parse_prompt(text)
        if _held_out(p) is None:
            strata[p.category, rare_factor(p) < 1.0].add(canonical(p).text)
    chosen = set()
    for cat in CATEGORIES:
        ordered = {r: sorted(strata[cat, r], key=lambda k: (zlib.crc32(k.encode()), k)) for r in (False, True)}
        n = {r: round(POLICY_FRACTION * len(ks)) for r, ks in ordered.items()}
        if n[False] + n[True] == 0:
            n[len(ordered[True]) > len(ordered[False])] = 1
        for r, ks in ordered.items():
            chosen.update(ks[: n[r]])
    return frozenset(chosen)


def split_of(prompt: Prompt | str, knobs: Knobs = Knobs()) -> str:
    """The split of a prompt: a held-out split's name, else ``policy``, else ``rare`` or ``common``."""
    p = parse_prompt(prompt) if isinstance(prompt, str) else prompt
    held = _held_out(p)
    if held is not None:
        return held
    if canonical(p).text in _policy_keys():
        return "policy"
    return "rare" if rare_factor(p, knobs) < 1.0 else "common"


def prompts_by_split(knobs: Knobs = Knobs()) -> dict[str, list[str]]:
    """Every prompt of ``all_prompts()`` under its split, in ``all_prompts`` order."""
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    for text in all_prompts():
        out[split_of(text, knobs)].append(text)
    return out


def colour_probs(knobs: Knobs = Knobs()) -> np.ndarray:
    """``(n_shapes, n_colours)``: the colour drawn for a colour-free object of each shape in the training data."""
    w = np.full((len(SHAPES), len(COLOURS)), knobs.rare_colour)
    for s, cs in PREFERRED_COLOURS.items():
        w[s, list(cs)] = 1.0
    for c, s in UNSEEN_PAIRS:
        w[s, c] = 0.0
    return w / w.sum(axis=1, keepdims=True)


def forbidden_relations() -> np.ndarray:
    """``(n_shapes, n_shapes, 4)`` bool: ``[a, b, r]`` is True when an ``a`` must never stand ``RELATIONS[r]`` of a
    ``b`` in training data."""
    out = np.zeros((len(SHAPES), len(SHAPES), len(RELATIONS)), dtype=bool)
    opposite = {"left of": "right of", "above": "below"}
    for a, r, b in UNSEEN_RELATIONS:
        out[a, b, RELATIONS.index(r)] = out[b, a, RELATIONS.index(opposite[r])] = True
    return out


def swapped_codes() -> np.ndarray:
    """``(n_objects, n_objects)`` bool over object codes ``colour * n_shapes + shape``: True for a ``SWAPPED`` pair."""
    n = len(COLOURS) * len(SHAPES)
    out = np.zeros((n, n), dtype=bool)
    for pair in SWAPPED:
        (c1, s1), (c2, s2) = sorted(pair)
        out[c1 * len(SHAPES) + s1, c2 * len(SHAPES) + s2] = out[c2 * len(SHAPES) + s2, c1 * len(SHAPES) + s1] = True
    return out


def twin(pair: frozenset[tuple[int, int]]) -> frozenset[tuple[int, int]]:
    """The colour-swapped twin of a pair of (colour, shape) objects."""
    (c1, s1), (c2, s2) = sorted(pair)
    return frozenset(((c2, s1), (c1, s2)))


def trained_prompts(knobs: Knobs = Knobs()) -> dict[str, tuple[list[str], np.ndarray]]:
    """Per category: the prompts of the frozen model's training data and their sampling probabilities."""
    out = {}
    for cat in CATEGORIES:
        texts = [t for t in all_prompts() if parse_prompt(t).category == cat and split_of(t, knobs) in TRAINED_SPLITS]
        w = np.array([prompt_weight(t, knobs) for t in texts])
        out[cat] = (texts, w / w.sum())
    return out

