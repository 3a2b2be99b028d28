"""The scenes world's fixed prompt sets: the default evaluation set (stratified by split x category) and the default
training set of ``train --world scenes`` (rare prompts the frozen model fails, one per category)."""

from __future__ import annotations

import json
from pathlib import Path

from find_rl.worlds.scenes.grammar import CATEGORIES, all_prompts, parse_prompt
from find_rl.worlds.scenes.splits import split_of

#: the splits, in report order
SPLITS = ("common", "rare", "policy", "unseen_pairs", "unseen_relations", "swapped")
#: prompts per (split, category) stratum in the default evaluation set (all of a smaller stratum)
PER_STRATUM = 8
#: a rare prompt is a training default when the frozen model's aligned rate on it is at most this
RARE_AT_MOST = 0.3
BASELINE = Path(__file__).resolve().parent / "model" / "baseline.json"


def strata() -> dict[tuple[str, str], list[str]]:
    """``{(split, category): prompts}`` over the whole language, in :func:`all_prompts` order."""
    out: dict[tuple[str, str], list[str]] = {}
    for p in all_prompts():
        out.setdefault((split_of(p), parse_prompt(p).category), []).append(p)
    return out


def default_eval_prompts(per_stratum: int = PER_STRATUM) -> list[str]:
    """At most ``per_stratum`` prompts of every (split, category) stratum, spread evenly over its fixed order
    (deterministic; a few hundred prompts), splits in :data:`SPLITS` order, categories in GenEval's."""
    groups = strata()
    out = []
    for split in SPLITS:
        for cat in CATEGORIES:
            ps = groups.get((split, cat), [])
            if len(ps) > per_stratum:
                step = len(ps) / per_stratum
                ps = [ps[int(i * step)] for i in range(per_stratum)]
            out += ps
    return out


def default_train_prompts(baseline: Path = BASELINE) -> list[str]:
    """Per category, the rare evaluation prompt the frozen model fails least while still failing (aligned rate
    <= :data:`RARE_AT_MOST` in the shipped ``baseline.json``; the most fixable failure), so every category where the
    model is rare is represented once. Without a baseline file: the first rare evaluation prompt of each category."""
    rates = {}
    if baseline.is_file():
        rates = {p: r["alignment"] for p, r in json.loads(baseline.read_text()).get("prompts", {}).items()}
    chosen = []
    for cat in CATEGORIES:
        rare = [p for p in default_eval_prompts() if split_of(p) == "rare" and parse_prompt(p).category == cat]
        if not rates:
            chosen += rare[:1]
            continue
        failing = [p for p in rare if p in rates and rates[p] <= RARE_AT_MOST]
        if failing:
            chosen.append(max(failing, key=lambda p: (rates[p], -rare.index(p))))
    return chosen
