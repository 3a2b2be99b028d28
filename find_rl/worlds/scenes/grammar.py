"""The prompt language of the scenes world: vocabulary, a typed parse, GenEval categories and the full prompt list.

Grammar (every prompt of the language is listed by :func:`all_prompts`; nothing else parses)::

    prompt   := group | group " and " group | group " " relation " " group
    group    := "a" [colour] shape | ("two" | "three") [colour] plural
    relation := "left of" | "right of" | "above" | "below"

A two-object prompt names one of each object ("a" on both sides), two different objects, and colours either both
or neither; coloured objects joined by "and" have two different colours and two different shapes (GenEval's
color_attr rule). "A left of B" means A's box centre is left of B's by GenEval's rule (see ``scorer.relation_holds``).
An optional leading "a photo of" (GenEval's phrasing) is accepted and dropped.

Categories, following GenEval's six tasks (``CATEGORIES``):

=============  ================================================  ==============================
category       form                                              example
=============  ================================================  ==============================
single_object  one object, no colour                             "a circle"
colors         one object with a colour                          "a red circle"
counting       two or three of one object, colour optional       "three circles", "two red crosses"
two_object     two different shapes joined by "and", no colour   "a circle and a square"
color_attr     two coloured objects joined by "and", colours     "a red circle and a blue square"
               and shapes both different
position       two different objects and a relation, colours     "a circle left of a square",
               optional                                          "a red circle above a blue circle"
=============  ================================================  ==============================

Colours are exact channel patterns (``COLOUR_PATTERNS``: the "on" channels are +1, the others -1).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

from find_rl.worlds.scenes.geometry import SHAPES

COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "cyan", "magenta")
#: Which of the (R, G, B) channels are on for each colour.
COLOUR_PATTERNS: tuple[tuple[int, int, int], ...] = ((1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (0, 1, 1), (1, 0, 1))
PLURALS: tuple[str, ...] = ("circles", "squares", "triangles", "crosses")
COUNT_WORDS: dict[int, str] = {1: "a", 2: "two", 3: "three"}
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
CATEGORIES: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
MAX_OBJECTS = 3

_COUNTS = {"a": 1, "one": 1, "two": 2, "three": 3}
_VOCABULARY = frozenset([*COLOURS, *SHAPES, *PLURALS, *_COUNTS, "and", "left", "right", "of", "above", "below"])


@dataclass(frozen=True)
class ObjectSpec:
    """One group of a prompt: ``count`` objects of shape ``shape`` (an index into ``SHAPES``) and colour
    ``colour`` (an index into ``COLOURS``; ``None``: any colour)."""

    shape: int
    colour: int | None = None
    count: int = 1

    @property
    def text(self) -> str:
        noun = SHAPES[self.shape] if self.count == 1 else PLURALS[self.shape]
        colour = f"{COLOURS[self.colour]} " if self.colour is not None else ""
        return f"{COUNT_WORDS[self.count]} {colour}{noun}"


@dataclass(frozen=True)
class Prompt:
    """A parsed prompt: one group, or two single objects joined by ``relation`` ("and" or one of ``RELATIONS``)."""

    objects: tuple[ObjectSpec, ...]
    relation: str | None = None

    @property
    def text(self) -> str:
        if len(self.objects) == 1:
            return self.objects[0].text
        return f"{self.objects[0].text} {self.relation} {self.objects[1].text}"

    @property
    def category(self) -> str:
        if len(self.objects) == 1:
            o = self.objects[0]
            return "counting" if o.count > 1 else ("single_object" if o.colour is None else "colors")
        if self.relation != "and":
            return "position"
        return "two_object" if self.objects[0].colour is None else "color_attr"

    @property
    def instances(self) -> tuple[ObjectSpec, ...]:
        """One spec per object to draw (a group of ``count`` objects expands to ``count`` specs of count 1)."""
        return tuple(ObjectSpec(o.shape, o.colour) for o in self.objects for _ in range(o.count))


def _fail(text: str, why: str) -> ValueError:
    return ValueError(f"cannot parse prompt {text!r}: {why}")


def _parse_group(words: list[str], text: str) -> ObjectSpec:
    if not words or words[0] not in _COUNTS:
        raise _fail(text, f"expected a count word ('a', 'two' or 'three') before {' '.join(words) or 'the end'!r}")
    count = _COUNTS[words[0]]
    rest = words[1:]
    colour = None
    if rest and rest[0] in COLOURS:
        colour, rest = COLOURS.index(rest[0]), rest[1:]
    if len(rest) != 1 or (rest[0] not in SHAPES and rest[0] not in PLURALS):
        raise _fail(text, f"expected one shape word after {words[0]!r}, got {' '.join(rest) or 'nothing'!r}")
    noun = rest[0]
    if count == 1 and noun in PLURALS:
        raise _fail(text, f"{words[0]!r} takes the singular {SHAPES[PLURALS.index(noun)]!r}, not {noun!r}")
    if count > 1 and noun in SHAPES:
        raise _fail(text, f"{words[0]!r} takes the plural {PLURALS[SHAPES.index(noun)]!r}, not {noun!r}")
    shape = SHAPES.index(noun) if noun in SHAPES else PLURALS.index(noun)
    return ObjectSpec(shape, colour, count)


def parse_prompt(text: str) -> Prompt:
    """Parse a prompt of the scenes language; raise a one-line ``ValueError`` naming what is wrong."""
    if not isinstance(text, str):
        raise ValueError(f"a prompt must be a string, got {type(text).__name__}")
    return _parse(text)


@lru_cache(maxsize=8192)
def _parse(text: str) -> Prompt:
    words = text.lower().replace(",", " ").replace(".", " ").split()
    if words[:3] == ["a", "photo", "of"]:
        words = words[3:]
    for w in words:
        if w not in _VOCABULARY:
            raise ValueError(
                f"unknown word {w!r} in prompt {text!r}; the scenes world knows the colours {', '.join(COLOURS)}, "
                f"the shapes {', '.join(SHAPES)}, the counts a/two/three and the relations and/{'/'.join(RELATIONS)}"
            )
    joins = [(i, r) for i, w in enumerate(words) for r in ("and", *RELATIONS) if words[i : i + len(r.split())] == r.split()]
    if not joins:
        return Prompt((_parse_group(words, text),))
    if len(joins) > 1:
        raise _fail(text, f"at most one relation per prompt, found {', '.join(repr(r) for _, r in joins)}")
    (i, relation), = joins
    first, second = _parse_group(words[:i], text), _parse_group(words[i + len(relation.split()) :], text)
    if first.count != 1 or second.count != 1:
        raise _fail(text, "a two-object prompt names one of each object, e.g. 'a red circle and a blue square'")
    if (first.colour is None) != (second.colour is None):
        raise _fail(text, "colour both objects or neither, e.g. 'a red circle left of a blue square'")
    why = _pair_rule(first, second, relation)
    if why:
        raise _fail(text, why)
    return Prompt((first, second), relation)


def _pair_rule(a: ObjectSpec, b: ObjectSpec, relation: str) -> str | None:
    """Why two single objects cannot form a prompt with ``relation``, or ``None`` when they can."""
    if a == b:
        return f"it names {a.text!r} twice; say '{COUNT_WORDS[2]} ...' to ask for two of them"
    if relation == "and" and a.colour is not None and (a.colour == b.colour or a.shape == b.shape):
        return "coloured objects joined by 'and' (color_attr) need two different colours and shapes, as in GenEval"
    return None


def all_prompts() -> list[str]:
    """Every prompt of the language, in a fixed order: by category (``CATEGORIES`` order), then by the loops below."""
    return list(_all_prompts())


@lru_cache(maxsize=1)
def _all_prompts() -> tuple[str, ...]:
    n_shapes, n_colours = range(len(SHAPES)), range(len(COLOURS))
    coloured = [ObjectSpec(s, c) for s in n_shapes for c in n_colours]
    plain = [ObjectSpec(s) for s in n_shapes]
    by_category: dict[str, list[Prompt]] = {c: [] for c in CATEGORIES}
    for o in plain + coloured:
        by_category[Prompt((o,)).category].append(Prompt((o,)))
    for n, o in itertools.product((2, 3), plain + coloured):
        by_category["counting"].append(Prompt((ObjectSpec(o.shape, o.colour, n),)))
    for group in (plain, coloured):
        for a, b in itertools.permutations(group, 2):
            for relation in ("and", *RELATIONS):
                if _pair_rule(a, b, relation) is None:
                    p = Prompt((a, b), relation)
                    by_category[p.category].append(p)
    return tuple(p.text for c in CATEGORIES for p in by_category[c])
