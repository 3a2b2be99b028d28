"""The comparison's statistics, free of Ray and torch: 95% t-intervals over seeds, the per-method aggregate, the time a
training curve takes to reach a level, and the issues' criteria computed from the numbers."""

from __future__ import annotations

import math

import numpy as np

from find_rl.evaluation.diversity import aligned_kept, same_sampler


#: (the rows' key, the results' and summary's name) of each aligned diversity kept against the reference: on pixels,
#: and on the world's factors (positions, sizes) where the reference has them (the scenes world)
KEPT = (("aligned_diversity", "aligned_kept"), ("aligned_factor_diversity", "aligned_factor_kept"))


def t95(n: int) -> float:
    """Two-sided 95% Student-t quantile for n - 1 degrees of freedom."""
    table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
    return table.get(n - 1, 1.96)


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval over seeds (0 for a single seed)."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()), 0.0
    return float(v.mean()), float(t95(len(v)) * v.std(ddof=1) / math.sqrt(len(v)))


def _reference(row: dict, ceiling: dict, prompt: str, sampler: dict | None) -> dict | None:
    """The reference a row's aligned diversity is kept against: none when the row was rendered with other sampler
    settings than the reference (e.g. DDPO's eta 1 against an eta-0 reference)."""
    return ceiling.get(prompt) if same_sampler(row.get("sampler"), sampler) else None


def aggregate(runs: dict[str, list[dict]], prompts: list[str], ceiling: dict | None = None,
              reference_sampler: dict | None = None) -> tuple[dict, dict]:
    """``results.json`` (per method and prompt, means over seeds) and the per-method summary with 95% t-intervals.
    ``ceiling``: the frozen model's aligned images per prompt (:func:`find_rl.evaluation.scoring.load_aligned_ceiling`), made with
    ``reference_sampler`` (rows rendered with other sampler settings get no aligned-diversity figure)."""
    ceiling = ceiling or {}
    base = runs.get("base")
    results, summary = {}, {}
    for method, seeds in runs.items():
        results[method] = {}
        for p in prompts:
            rows = [s["per_prompt"][p] for s in seeds]
            entry = {k: float(np.mean([r[k] for r in rows])) for k in ("alignment", "strict_alignment", "diversity")}
            entry |= {"reward_evals": int(rows[0]["reward_evals"]), "wall_s": float(np.mean([s["wall_s"] for s in seeds])),
                      "evals_per_image": seeds[0]["evals_per_image"], "held_out": bool(rows[0].get("held_out", False)),
                      "alignment_ci95": mean_ci([r["alignment"] for r in rows])[1], "seeds": len(rows)}
            if base:
                entry["diversity_kept"] = entry["diversity"] / max(np.mean([b["per_prompt"][p]["diversity"] for b in base]), 1e-9)
            for key, name in KEPT:
                kept = [aligned_kept(r, _reference(r, ceiling, p, reference_sampler), key=key) for r in rows]
                if all(k is not None for k in kept):
                    entry |= {"aligned_count": float(np.mean([r["aligned_count"] for r in rows])), name: float(np.mean(kept))}
            results[method][p] = entry
        per_seed = {k: [np.mean([s["per_prompt"][p][k] for p in prompts]) for s in seeds]
                    for k in ("alignment", "strict_alignment", "diversity")}
        summ = {k: dict(zip(("mean", "ci95"), mean_ci(v))) for k, v in per_seed.items()}
        if base:
            kept = [np.mean([s["per_prompt"][p]["diversity"] / np.mean([b["per_prompt"][p]["diversity"] for b in base]) for p in prompts])
                    for s in seeds]
            summ["diversity_kept"] = dict(zip(("mean", "ci95"), mean_ci(kept)))
        for key, name in KEPT:
            if all(name in results[method][p] for p in prompts):
                per = [[aligned_kept(s["per_prompt"][p], _reference(s["per_prompt"][p], ceiling, p, reference_sampler), key=key)
                        for p in prompts] for s in seeds]
                summ[name] = dict(zip(("mean", "ci95"), mean_ci([np.mean(v) for v in per])))
                summ[f"{name}_min_prompt"] = float(min(np.mean([v[i] for v in per]) for i in range(len(prompts))))
        for group, keep in (("trained", False), ("held_out", True)):
            ps = [p for p in prompts if results[method][p]["held_out"] == keep]
            if ps and any(results[method][p]["held_out"] for p in prompts):
                summ[f"alignment_{group}"] = dict(zip(("mean", "ci95"), mean_ci([np.mean([s["per_prompt"][p]["alignment"] for p in ps]) for s in seeds])))
        summ |= {"reward_evals": int(seeds[0]["reward_evals"]), "evals_per_image": seeds[0]["evals_per_image"],
                 "wall_s": dict(zip(("mean", "ci95"), mean_ci([s["wall_s"] for s in seeds]))),
                 "cpu_s": dict(zip(("mean", "ci95"), mean_ci([s["cpu_s"] for s in seeds]))), "seeds": len(seeds)}
        summary[method] = summ
    return results, summary


def frontier(summary: dict) -> list[str]:
    """The methods on the alignment / aligned-diversity-kept frontier: none other is at least as good on both and better
    on one (methods without an aligned-diversity figure are left out)."""
    pts = {m: (s["alignment"]["mean"], s["aligned_kept"]["mean"]) for m, s in summary.items() if "aligned_kept" in s}
    return [m for m, (a, d) in pts.items()
            if not any(a2 >= a and d2 >= d and (a2 > a or d2 > d) for m2, (a2, d2) in pts.items() if m2 != m)]


def time_to_reach(history: list[dict], target: float, window: int = 5) -> float | None:
    """Wall seconds until the training-batch alignment, averaged over ``window`` iterations, first reaches ``target``."""
    a = np.array([h["alignment"] for h in history], dtype=float)
    if len(a) == 0:
        return None
    smooth = np.convolve(a, np.ones(window) / window, mode="valid") if len(a) >= window else a
    hit = np.flatnonzero(smooth >= target)
    if len(hit) == 0:
        return None
    return float(history[int(hit[0]) + (window - 1 if len(a) >= window else 0)]["wall_s"])


def first_reach(rows: list[dict], target: float) -> tuple[float, int] | None:
    """``(wall seconds, reward evaluations per prompt)`` of the first fresh-sample checkpoint at ``target`` or above."""
    for r in rows:
        if r["alignment"] >= target:
            return float(r["wall_s"]), int(r["reward_evals_per_prompt"])
    return None


def criteria(runs: dict[str, list[dict]], results: dict, summary: dict, prompts: list[str]) -> dict:
    """The issue's done-when checks, computed from this report's own numbers (only those whose methods ran)."""
    out = {}
    a = {m: float(s["alignment"]["mean"]) for m, s in summary.items()}
    if "find" in a and "cem" in a:
        out["find_beats_cem"] = {"find": a["find"], "cem": a["cem"], "met": bool(a["find"] > a["cem"])}
    if "find" in a and "best-of-16" in a:
        out["find_matches_best_of_16"] = {"find": a["find"], "best-of-16": a["best-of-16"], "met": bool(a["find"] >= a["best-of-16"])}
    if "find" in a and "ddpo" in a:
        # both on their training-loop clocks (start-up of Ray, RLlib and Ray Train excluded on both sides). With
        # fresh-sample checkpoints (the same evaluator and noise for both): FIND's first checkpoint at DDPO's final
        # checkpoint's alignment, on that same evaluator (not DDPO's 256-sample score on other noise); without them
        # (an older cache), FIND's smoothed training-batch alignment against DDPO's final score.
        ddpo_wall = float(np.mean([r["history"][-1]["wall_s"] for r in runs["ddpo"]]))
        fresh = all(r.get("fresh") for r in runs["find"])
        same_evaluator = fresh and all(r.get("fresh") for r in runs["ddpo"])
        target = float(np.mean([r["fresh"][-1]["alignment"] for r in runs["ddpo"]])) if same_evaluator else a["ddpo"]
        if fresh:
            hits = [first_reach(r["fresh"], target) for r in runs["find"]]
            reach = [h[0] if h else None for h in hits]
        else:
            reach = [time_to_reach(r["history"], target) for r in runs["find"]]
        ok = [t for t in reach if t is not None]
        speedup = float(ddpo_wall / max(np.mean(ok), 1e-9)) if len(ok) == len(reach) and ok else None
        c = {"basis": "fresh-sample checkpoints" if fresh else "training batches (5-iteration mean)",
             "ddpo_final_alignment": target, "ddpo_final_alignment_scored": a["ddpo"],
             "target_evaluator": "DDPO's final checkpoint" if same_evaluator else "DDPO's final score",
             "ddpo_training_loop_s": ddpo_wall, "find_seconds_to_reach": reach}
        if fresh:
            c["find_evals_to_reach"] = [h[1] if h else None for h in hits]
            if all(r.get("fresh") for r in runs["ddpo"]):  # where DDPO's own curve first reached its final level
                d = [first_reach(r["fresh"], target) for r in runs["ddpo"]]
                c["ddpo_seconds_to_reach"] = [h[0] if h else None for h in d]
        out["find_10x_faster_than_ddpo"] = c | {"speedup": speedup, "met": bool(speedup is not None and speedup >= 10)}
    if "amortized" in summary and "base" in results:
        held = [p for p in prompts if results["amortized"][p]["held_out"]]
        trained = [p for p in prompts if not results["amortized"][p]["held_out"]]
        if held:
            am, bs = np.mean([results["amortized"][p]["alignment"] for p in held]), np.mean([results["base"][p]["alignment"] for p in held])
            out["amortized_beats_base_held_out"] = {"amortized": float(am), "base": float(bs), "prompts": held, "met": bool(am > bs)}
        if trained and "find" in results:
            am = np.mean([results["amortized"][p]["alignment"] for p in trained])
            fd = np.mean([results["find"][p]["alignment"] for p in trained])
            out["amortized_within_0.1_of_find_trained"] = {"amortized": float(am), "find": float(fd), "prompts": trained,
                                                           "met": bool(am >= fd - 0.1)}
    return out
