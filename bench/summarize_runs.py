"""Summarise finished ``find_rl.train`` runs into one markdown table (mean over each run's prompts).

How to run::

    python bench/summarize_runs.py runs/find-s0 runs/find-s1 runs/find-s2
    python bench/summarize_runs.py runs/scenes-s* --reference find_rl/worlds/scenes/model/aligned_ceiling.json

Reads each run's ``results.csv`` (fresh-sample evaluation), ``progress.jsonl`` (training wall time) and
``noise_policy.json`` (settings), and prints one row per run plus mean +- spread over the runs given. With
``--reference`` (an ``aligned_ceiling.json`` made for the runs' model and sampler, e.g. after the runs), it adds the
aligned diversity kept against it, on pixels and on factors where the file has them (a failed prompt counts 0; one
outside the file makes the mean "—"), as ``results.md`` prints it when the reference exists before the run.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np

from find_rl.evaluation.diversity import aligned_kept


def kept_against(rows: list[dict], reference: dict, key: str) -> tuple[float, float] | None:
    """(mean, min) over the prompts of the aligned diversity kept against ``reference``; None if a prompt has none."""
    kept = []
    for r in rows:
        count = r.get("find_aligned_count")
        value = r.get("find_" + key)
        row = {"aligned_count": int(count) if count not in (None, "") else None,
               key: float(value) if value not in (None, "") else None}
        kept.append(aligned_kept(row, reference.get(r["prompt"]), key=key))
    return None if not kept or None in kept else (float(np.mean(kept)), float(min(kept)))


def load(run: Path, reference: dict | None = None) -> dict:
    rows = list(csv.DictReader((run / "results.csv").open()))
    prog = [json.loads(x) for x in (run / "progress.jsonl").read_text().splitlines() if x.strip()]
    meta = json.loads((run / "noise_policy.json").read_text())["training"]
    f = lambda k: float(np.mean([float(r[k]) for r in rows]))  # noqa: E731
    return {"run": run.name, "base": f("base_alignment"), "find": f("find_alignment"), "strict": f("find_strict"),
            "kept": f("diversity_kept"), "min_kept": min(float(r["diversity_kept"]) for r in rows),
            "evals": meta["reward_evals_per_prompt"], "train_s": sum(p["seconds"] for p in prog), "iters": len(prog),
            **({} if reference is None else {"aligned_kept": kept_against(rows, reference, "aligned_diversity"),
                                              "factor_kept": kept_against(rows, reference, "aligned_factor_diversity")})}


def _kept(v: tuple[float, float] | None) -> str:
    return "—" if v is None else f"{v[0]:.0%} / {v[1]:.0%}"


def main(argv: list[str]) -> None:
    reference = None
    if "--reference" in argv:
        i = argv.index("--reference")
        reference = json.loads(Path(argv[i + 1]).read_text())["prompts"]
        argv = argv[:i] + argv[i + 2 :]
    runs = [load(Path(p), reference) for p in argv]
    extra = " aligned diversity kept (mean / min) | aligned factor diversity kept (mean / min) |" if reference else ""
    print("| run | iterations | reward evals / prompt | train loop wall (s) | rare alignment base → FIND | strict | "
          "diversity kept (mean / min prompt) |" + extra)
    print("|---|---|---|---|---|---|---|" + ("---|---|" if reference else ""))
    for r in runs:
        print(f"| {r['run']} | {r['iters']} | {r['evals']} | {r['train_s']:.0f} | {r['base']:.3f} → {r['find']:.3f} | "
              f"{r['strict']:.3f} | {r['kept']:.0%} / {r['min_kept']:.0%} |"
              + (f" {_kept(r['aligned_kept'])} | {_kept(r['factor_kept'])} |" if reference else ""))
    if len(runs) > 1:
        a = np.array([r["find"] for r in runs])
        b = np.array([r["base"] for r in runs])
        s = np.array([r["strict"] for r in runs])
        k = np.array([r["kept"] for r in runs])
        line = (f"| **mean ± spread (min–max)** | | | | {b.mean():.3f} → {a.mean():.3f} ± {a.std(ddof=1):.3f} "
                f"({a.min():.3f}–{a.max():.3f}) | {s.mean():.3f} ({s.min():.3f}–{s.max():.3f}) | {k.mean():.0%} "
                f"({k.min():.0%}–{k.max():.0%}) |")
        if reference:
            for key in ("aligned_kept", "factor_kept"):
                vals = [r[key][0] for r in runs if r[key] is not None]
                line += f" {np.mean(vals):.0%} |" if len(vals) == len(runs) else " — |"
        print(line)


if __name__ == "__main__":
    main(sys.argv[1:])
