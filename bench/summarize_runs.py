"""Summarise finished ``find_rl.train`` runs into one markdown table (mean over each run's prompts).

How to run::

    python bench/summarize_runs.py runs/find-s0 runs/find-s1 runs/find-s2

Reads each run's ``results.csv`` (fresh-sample evaluation), ``progress.jsonl`` (training wall time) and
``noise_policy.json`` (settings), and prints one row per run plus mean +- spread over the runs given.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np


def load(run: Path) -> dict:
    rows = list(csv.DictReader((run / "results.csv").open()))
    prog = [json.loads(x) for x in (run / "progress.jsonl").read_text().splitlines() if x.strip()]
    meta = json.loads((run / "noise_policy.json").read_text())["training"]
    f = lambda k: float(np.mean([float(r[k]) for r in rows]))  # noqa: E731
    return {"run": run.name, "base": f("base_alignment"), "find": f("find_alignment"), "strict": f("find_strict"),
            "kept": f("diversity_kept"), "min_kept": min(float(r["diversity_kept"]) for r in rows),
            "evals": meta["reward_evals_per_prompt"], "train_s": sum(p["seconds"] for p in prog), "iters": len(prog)}


def main(paths: list[str]) -> None:
    runs = [load(Path(p)) for p in paths]
    print("| run | iterations | reward evals / prompt | train loop wall (s) | rare alignment base → FIND | strict | diversity kept (mean / min prompt) |")
    print("|---|---|---|---|---|---|---|")
    for r in runs:
        print(f"| {r['run']} | {r['iters']} | {r['evals']} | {r['train_s']:.0f} | {r['base']:.3f} → {r['find']:.3f} | "
              f"{r['strict']:.3f} | {r['kept']:.0%} / {r['min_kept']:.0%} |")
    if len(runs) > 1:
        a = np.array([r["find"] for r in runs])
        s = np.array([r["strict"] for r in runs])
        k = np.array([r["kept"] for r in runs])
        print(f"| **mean ± spread (min–max)** | | | | {a.mean():.3f} ({a.min():.3f}–{a.max():.3f}) | {s.mean():.3f} "
              f"({s.min():.3f}–{s.max():.3f}) | {k.mean():.0%} ({k.min():.0%}–{k.max():.0%}) |")


if __name__ == "__main__":
    main(sys.argv[1:])
