"""The scenes world's fixed prompt sets: the default evaluation set (stratified by split x category) and the default
training set of ``train --world scenes`` (rare prompts the frozen model fails, one per category)."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

from find_rl.worlds.scenes.grammar import CATEGORIES, all_prompts, parse_prompt
from find_rl.worlds.scenes.splits import prompts_by_split, split_of

#: prompts per (split, category) stratum in the default evaluation set (all of a smaller stratum)
PER_STRATUM = 12
#: a rare prompt is a training default when the frozen model's aligned rate on it is at most this
RARE_AT_MOST = 0.3
BASELINE = Path(__file__).resolve().parent / "model" / "baseline.json"


def default_eval_prompts(per_stratum: int = PER_STRATUM) -> list[str]:
    """The stratified evaluation prompts: up to ``per_stratum`` per (split, category), chosen by CRC-32 of the text
    (deterministic, spread over the stratum), listed in :func:`all_prompts` order; 211 prompts at 12."""
    chosen = set()
    for split, texts in prompts_by_split().items():
        for cat in CATEGORIES:
            stratum = [t for t in texts if parse_prompt(t).category == cat]
            chosen.update(sorted(stratum, key=lambda t: (zlib.crc32(t.encode()), t))[:per_stratum])
    return [t for t in all_prompts() if t in chosen]


def default_train_prompts(baseline: Path = BASELINE) -> list[str]:
    """Per category, the rare evaluation prompt the frozen model fails least while still failing (aligned rate
    <= :data:`RARE_AT_MOST` in the shipped ``baseline.json``: the most fixable failure), so every category where the
    model is rare is represented once; a category with no such prompt is left out. Without a baseline file: the first
    rare evaluation prompt of each category."""
    rates = {}
    if baseline.is_file():
        rates = {p: r["aligned"] for p, r in json.loads(baseline.read_text()).get("prompts", {}).items()}
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
