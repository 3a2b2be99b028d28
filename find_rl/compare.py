"""FIND against its baselines at equal reward-evaluation budgets: ``python -m find_rl.evaluate --methods ... --out DIR``.

Methods (each trained, where it trains, for ``--seeds`` seeds; every one scored the same way on fresh samples):

==================  ==========================================================================================
``base``            the frozen model under N(0, I)
``best-of-N``       N candidates from N(0, I) per delivered image, the reward keeps the best (e.g. ``best-of-16``)
``cem``             cross-entropy method / iterated elite means on the noise (:mod:`find_rl.baselines.cem`)
``ddpo``            DDPO-style RL fine-tuning of the denoiser on Ray Train (:mod:`find_rl.baselines.ddpo`)
``find``            ``python -m find_rl.train`` with its defaults
``find-nocal``      ... ``--no-calibration``;  ``find-noclip``: ``--clip-param inf``;  ``find-clamp``: ``--surrogate clamp``
``find-paper``      the released code's loop: one sample per iteration, clamp-only ratio (:mod:`find_rl.baselines.paper_loop`)
``amortized``       one prompt-conditioned policy trained on every shapes prompt except ``--held-out``, scored on all
``amortized-all``   the same policy trained on all nine shapes prompts
==================  ==========================================================================================

Budgets: every trained method spends ``iterations x samples_per_prompt`` reward evaluations per prompt (80 x 32 =
2,560 by default; the paper loop 2,560 x 1). ``best-of-N`` spends N per delivered image at generation time.

Writes ``DIR/results.json`` (``{method: {prompt: {alignment, strict_alignment, diversity, reward_evals, wall_s, ...}}}``,
means over seeds), ``DIR/summary.json`` (per method: means and 95% t-intervals over seeds, the criteria),
``DIR/report.md``, ``DIR/alignment_vs_evals.png``, ``DIR/alignment_vs_wall.png`` and ``DIR/grids/<prompt>.png``.
Runs go to ``DIR/runs/<method>_s<seed>/``; a finished one (its ``method.json``) is reused when the command is rerun.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

FIND_FLAGS = {"find": [], "find-nocal": ["--no-calibration"], "find-noclip": ["--clip-param", "inf"],
              "find-clamp": ["--surrogate", "clamp"]}
OTHER = ("base", "cem", "ddpo", "find-paper", "amortized", "amortized-all")
DEFAULT_HELD_OUT = ("a green circle", "a blue square")
METHOD_FILE = "method.json"


def parse_methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    if not methods:
        raise ValueError("--methods is empty; e.g. --methods base,best-of-16,cem,ddpo,find")
    for m in methods:
        if m not in FIND_FLAGS and m not in OTHER and not re.fullmatch(r"best-of-[1-9]\d*", m):
            raise ValueError(f"unknown method {m!r}; choose from base, best-of-N (e.g. best-of-16), cem, ddpo, "
                             f"{', '.join(FIND_FLAGS)}, find-paper, amortized, amortized-all")
    if len(set(methods)) != len(methods):
        raise ValueError("--methods lists a method twice")
    return methods


@dataclass
class CompareSettings:
    methods: list[str]
    out: Path
    prompts: list[str] = field(default_factory=list)  # scored prompts (default: the rare ones)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    samples: int = 256  # fresh samples per prompt and seed for scoring
    iterations: int = 80
    samples_per_prompt: int = 32
    held_out: list[str] = field(default_factory=lambda: list(DEFAULT_HELD_OUT))
    ddpo_workers: int = 2
    ddpo_lr: float = 1e-3
    amortized_hidden: int = 64  # the amortised methods' MLP path (python -m find_rl.train --amortized-hidden)
    threads: int = 2
    grid_images: int = 8
    device: str = "cpu"  # where every method renders and trains ("cuda": DDPO's Ray Train workers take one GPU each)


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


# ---------------------------------------------------------------------------------------------------- one run
def _train_find(method: str, seed: int, cs: CompareSettings, run_dir: Path, extra: list[str]) -> dict:
    from find_rl import train
    from find_rl.export import load_policy

    argv = ["--out", str(run_dir), "--seed", str(seed), "--iterations", str(cs.iterations), "--eval-samples", "0",
            "--samples-per-prompt", str(cs.samples_per_prompt), "--threads", str(cs.threads), "--device", cs.device, *extra]
    t0, c0 = time.perf_counter(), time.process_time()
    if train.main(argv) != 0:
        raise RuntimeError(f"{method} seed {seed}: python -m find_rl.train {' '.join(argv)} failed")
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rows = [json.loads(ln) for ln in (run_dir / train.PROGRESS_FILE).read_text().splitlines() if ln.strip()]
    elapsed = np.cumsum([r["seconds"] for r in rows])
    # the curve is over the scored prompts the run trained on (an amortised run also trains the common prompts)
    scored = [p for p in cs.prompts if p in rows[0].get("alignment_per_prompt", {})]
    history = [{"reward_evals_per_prompt": r["reward_evals_per_prompt"], "wall_s": float(t),
                "alignment": float(np.mean([r["alignment_per_prompt"][p] for p in scored])) if scored else r["alignment"]}
               for r, t in zip(rows, elapsed)]
    pol = load_policy(run_dir)
    return {"policy": pol, "wall_s": wall, "cpu_s": cpu, "history": history,
            "reward_evals": cs.iterations * cs.samples_per_prompt}


def run_one(method: str, seed: int, cs: CompareSettings, sampler, reward) -> dict:
    """Train (where the method trains) and score one method for one seed.

    Returns ``{"per_prompt": {prompt: scores + images}, "reward_evals", "evals_per_image", "wall_s", "cpu_s", "history"}``."""
    from find_rl.evaluate import evaluate_distributions, score_image_sets

    run_dir = cs.out / "runs" / f"{method}_s{seed}"
    if run_dir.exists():  # an unfinished (or differently configured) run of an earlier call: start it again
        import shutil

        shutil.rmtree(run_dir)
    eval_seed = 10_000 + seed  # the same fresh noise for every method of a seed
    evaluate = dict(prompts=cs.prompts, samples=cs.samples, seed=eval_seed, sampler=sampler, return_images=cs.grid_images)
    held: set[str] = set()
    if method == "base":
        res = dict(per_prompt=evaluate_distributions(**evaluate), reward_evals=0, evals_per_image=1, wall_s=0.0, cpu_s=0.0, history=[])
    elif method.startswith("best-of-"):
        from find_rl.baselines.best_of_n import best_of_n

        n = int(method.rsplit("-", 1)[1])
        t0, c0 = time.perf_counter(), time.process_time()
        picked = best_of_n(sampler, reward, cs.prompts, n=n, images=cs.samples, seed=eval_seed)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        res = dict(per_prompt=score_image_sets({p: v["images"] for p, v in picked.items()}, return_images=cs.grid_images),
                   reward_evals=n * cs.samples, evals_per_image=n, wall_s=wall, cpu_s=cpu, history=[])
    elif method in ("cem", "find-paper"):
        t0, c0 = time.perf_counter(), time.process_time()
        if method == "cem":
            from find_rl.baselines.cem import CEMSettings, run_cem

            out = run_cem(sampler, reward, cs.prompts, CEMSettings(iterations=cs.iterations, population=cs.samples_per_prompt), seed=seed)
        else:
            from find_rl.baselines.paper_loop import PaperLoopSettings, run_paper_loop

            out = run_paper_loop(sampler, reward, cs.prompts, PaperLoopSettings(iterations=cs.iterations * cs.samples_per_prompt), seed=seed)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        res = dict(per_prompt=evaluate_distributions(mean=out["mean"], std=out["std"], **evaluate),
                   reward_evals=cs.iterations * cs.samples_per_prompt, evals_per_image=1, wall_s=wall, cpu_s=cpu, history=out["history"])
    elif method == "ddpo":
        from find_rl.baselines.ddpo import DDPOSettings, run_ddpo
        from find_rl.sampler import DiffusionSampler, SamplerSettings
        from find_rl.models import load_pipeline
        from diffusers import UNet2DModel

        s = DDPOSettings(iterations=cs.iterations, samples_per_prompt=cs.samples_per_prompt, lr=cs.ddpo_lr)
        out = run_ddpo(s, cs.prompts, run_dir, seed=seed, num_workers=cs.ddpo_workers, threads_per_worker=max(1, cs.threads // cs.ddpo_workers),
                       use_gpu=cs.device.startswith("cuda"))
        pipe = load_pipeline("shapes", device=cs.device)
        pipe.unet = UNet2DModel.from_pretrained(out["unet"], low_cpu_mem_usage=False).to(cs.device)
        tuned = DiffusionSampler(pipe, SamplerSettings(eta=s.eta, device=cs.device), seed=eval_seed)  # DDPO's own (stochastic) sampler
        res = dict(per_prompt=evaluate_distributions(**(evaluate | {"sampler": tuned})), reward_evals=cs.iterations * cs.samples_per_prompt,
                   evals_per_image=1, wall_s=out["wall_s"], cpu_s=out["history"][-1]["cpu_s"], history=out["history"])
    elif method in FIND_FLAGS or method.startswith("amortized"):
        from find_rl.shapes.world import all_prompts

        if method in FIND_FLAGS:
            extra = ["--prompts", *cs.prompts, *FIND_FLAGS[method]]
        else:
            held = set(cs.held_out) if method == "amortized" else set()
            extra = ["--policy-type", "amortized", "--amortized-hidden", str(cs.amortized_hidden),
                     "--prompts", *[p for p in all_prompts() if p not in held]]
            if held:
                extra += ["--eval-prompts", *sorted(held)]
        out = _train_find(method, seed, cs, run_dir, extra)
        pol = out["policy"]
        idx = [pol.index(p) for p in cs.prompts]
        res = dict(per_prompt=evaluate_distributions(mean=pol.mean[idx], std=pol.std[idx], **evaluate), reward_evals=out["reward_evals"],
                   evals_per_image=1, wall_s=out["wall_s"], cpu_s=out["cpu_s"], history=out["history"])
    else:  # parse_methods keeps this unreachable
        raise ValueError(f"unknown method {method!r}")
    for p, r in res["per_prompt"].items():
        r["held_out"] = p in held
        r["reward_evals"] = 0 if p in held else res["reward_evals"]
    return res


# ---------------------------------------------------------------------------------------------------- the whole comparison
def run_comparison(cs: CompareSettings, log=print) -> dict:
    from find_rl.rewards import make_reward
    from find_rl.sampler import DiffusionSampler, SamplerSettings

    cs.out.mkdir(parents=True, exist_ok=True)
    sampler = DiffusionSampler.from_pretrained("shapes", SamplerSettings(device=cs.device))
    reward = make_reward("shapes")
    runs: dict[str, list[dict]] = {}
    for method in cs.methods:
        for seed in cs.seeds:
            cache = cs.out / "runs" / f"{method}_s{seed}" / METHOD_FILE
            res = _load_run(cache, run_key(cs, method)) if cache.is_file() else None
            if res is not None:
                log(f"[{method} seed {seed}] reusing {cache}")
            else:
                log(f"[{method} seed {seed}] running")
                torch.set_num_threads(cs.threads)
                res = run_one(method, seed, cs, sampler, reward) | {"key": run_key(cs, method)}
                _save_run(cache, res)
            runs.setdefault(method, []).append(res)
            mean_align = np.mean([r["alignment"] for r in res["per_prompt"].values()])
            log(f"[{method} seed {seed}] alignment {mean_align:.3f}  wall {res['wall_s']:.0f} s")
    return write_report(cs, runs)


def _save_run(path: Path, res: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path.with_suffix(".npz"), **{p: r["images"] for p, r in res["per_prompt"].items() if "images" in r})
    slim = res | {"per_prompt": {p: {k: v for k, v in r.items() if k != "images"} for p, r in res["per_prompt"].items()}}
    path.write_text(json.dumps(slim))


def run_key(cs: CompareSettings, method: str) -> dict:
    """What a finished run depends on: a rerun reuses it only when all of this is unchanged."""
    key = {"prompts": cs.prompts, "samples": cs.samples, "iterations": cs.iterations, "samples_per_prompt": cs.samples_per_prompt}
    if cs.device != "cpu":  # timings (and float rounding) differ by device
        key |= {"device": cs.device}
    if method == "ddpo":
        key |= {"ddpo_lr": cs.ddpo_lr, "ddpo_workers": cs.ddpo_workers}
    if method.startswith("amortized"):
        key |= {"amortized_hidden": cs.amortized_hidden}
    if method == "amortized":
        key |= {"held_out": sorted(cs.held_out)}
    return key


def _load_run(path: Path, key: dict) -> dict | None:
    res = json.loads(path.read_text())
    if res.get("key") != key:
        return None
    images = np.load(path.with_suffix(".npz"))
    for p, r in res["per_prompt"].items():
        if p in images:
            r["images"] = images[p]
    return res


def aggregate(runs: dict[str, list[dict]], prompts: list[str]) -> tuple[dict, dict]:
    """``results.json`` (per method and prompt, means over seeds) and the per-method summary with 95% t-intervals."""
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
            results[method][p] = entry
        per_seed = {k: [np.mean([s["per_prompt"][p][k] for p in prompts]) for s in seeds]
                    for k in ("alignment", "strict_alignment", "diversity")}
        summ = {k: dict(zip(("mean", "ci95"), mean_ci(v))) for k, v in per_seed.items()}
        if base:
            kept = [np.mean([s["per_prompt"][p]["diversity"] / np.mean([b["per_prompt"][p]["diversity"] for b in base]) for p in prompts])
                    for s in seeds]
            summ["diversity_kept"] = dict(zip(("mean", "ci95"), mean_ci(kept)))
        for group, keep in (("trained", False), ("held_out", True)):
            ps = [p for p in prompts if results[method][p]["held_out"] == keep]
            if ps and any(results[method][p]["held_out"] for p in prompts):
                summ[f"alignment_{group}"] = dict(zip(("mean", "ci95"), mean_ci([np.mean([s["per_prompt"][p]["alignment"] for p in ps]) for s in seeds])))
        summ |= {"reward_evals": int(seeds[0]["reward_evals"]), "evals_per_image": seeds[0]["evals_per_image"],
                 "wall_s": dict(zip(("mean", "ci95"), mean_ci([s["wall_s"] for s in seeds]))),
                 "cpu_s": dict(zip(("mean", "ci95"), mean_ci([s["cpu_s"] for s in seeds]))), "seeds": len(seeds)}
        summary[method] = summ
    return results, summary


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


def criteria(runs: dict[str, list[dict]], results: dict, summary: dict, prompts: list[str]) -> dict:
    """The issue's done-when checks, computed from this report's own numbers (only those whose methods ran)."""
    out = {}
    a = {m: float(s["alignment"]["mean"]) for m, s in summary.items()}
    if "find" in a and "cem" in a:
        out["find_beats_cem"] = {"find": a["find"], "cem": a["cem"], "met": bool(a["find"] > a["cem"])}
    if "find" in a and "best-of-16" in a:
        out["find_matches_best_of_16"] = {"find": a["find"], "best-of-16": a["best-of-16"], "met": bool(a["find"] >= a["best-of-16"])}
    if "find" in a and "ddpo" in a:
        # both on their training-loop clocks (start-up of Ray, RLlib and Ray Train excluded on both sides)
        target = a["ddpo"]
        ddpo_wall = float(np.mean([r["history"][-1]["wall_s"] for r in runs["ddpo"]]))
        reach = [time_to_reach(r["history"], target) for r in runs["find"]]
        ok = [t for t in reach if t is not None]
        speedup = float(ddpo_wall / max(np.mean(ok), 1e-9)) if len(ok) == len(reach) and ok else None
        out["find_10x_faster_than_ddpo"] = {"ddpo_final_alignment": target, "ddpo_training_loop_s": ddpo_wall,
                                             "find_seconds_to_reach": reach, "speedup": speedup,
                                             "met": bool(speedup is not None and speedup >= 10)}
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


def write_report(cs: CompareSettings, runs: dict[str, list[dict]]) -> dict:
    from find_rl.report import comparison_plots, image_grid

    results, summary = aggregate(runs, cs.prompts)
    checks = criteria(runs, results, summary, cs.prompts)
    (cs.out / "results.json").write_text(json.dumps(results, indent=2))
    (cs.out / "summary.json").write_text(json.dumps({"methods": summary, "criteria": checks, "settings": {
        "prompts": cs.prompts, "seeds": cs.seeds, "samples": cs.samples, "iterations": cs.iterations,
        "samples_per_prompt": cs.samples_per_prompt, "held_out": cs.held_out, "ddpo_workers": cs.ddpo_workers,
        "amortized_hidden": cs.amortized_hidden, "device": cs.device}}, indent=2))
    comparison_plots({m: [r["history"] for r in rs] for m, rs in runs.items()}, summary, cs.out)
    grids = cs.out / "grids"
    grids.mkdir(exist_ok=True)
    for p in cs.prompts:
        image_grid({m: rs[0]["per_prompt"][p]["images"] for m, rs in runs.items() if "images" in rs[0]["per_prompt"][p]},
                   grids / f"{p.replace(' ', '_')}.png", label_width=90)
    (cs.out / "report.md").write_text(format_report(cs, results, summary, checks))
    return {"results": results, "summary": summary, "criteria": checks}


def _machine(device: str) -> str:
    """The machine the timings come from, in words (the GPU's name where the methods ran on CUDA)."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, {os.cpu_count()} CPU cores"
    return f"CPU only, {os.cpu_count()} cores"


def format_report(cs: CompareSettings, results: dict, summary: dict, checks: dict) -> str:
    def pm(d: dict, fmt: str = ".3f") -> str:
        return f"{d['mean']:{fmt}} ± {d['ci95']:{fmt}}"

    lines = [
        "# FIND vs baselines on the shapes world",
        "",
        f"Prompts: {', '.join(cs.prompts)}. Seeds: {', '.join(map(str, cs.seeds))}; every number is the mean over seeds ± the "
        f"half-width of its 95% t-interval. Scored on {cs.samples} fresh samples per prompt and seed (the same noise for every "
        "method of a seed) by the detector (IoU ≥ 0.7) and its strict setting (IoU ≥ 0.8); diversity = mean pairwise L2 "
        "distance between a prompt's images, kept = relative to the frozen model's.",
        f"Budget: {cs.iterations} iterations x {cs.samples_per_prompt} samples = {cs.iterations * cs.samples_per_prompt} reward "
        "evaluations per prompt for every trained method; best-of-N spends N per delivered image. Wall and CPU seconds are the "
        f"training (or, for best-of-N, generation) time of one seed on this machine ({_machine(cs.device)}).",
        "",
        "| method | alignment | strict | diversity kept | reward evals / prompt | evals per image | wall s | CPU s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m, s in summary.items():
        kept = pm(s["diversity_kept"], ".0%") if "diversity_kept" in s else "-"
        lines.append(f"| {m} | {pm(s['alignment'])} | {pm(s['strict_alignment'])} | {kept} | {s['reward_evals']} | "
                     f"{s['evals_per_image']} | {pm(s['wall_s'], '.0f')} | {pm(s['cpu_s'], '.0f')} |")
    lines += ["", "## Per prompt (alignment / strict / diversity kept)", "",
              "| method | " + " | ".join(cs.prompts) + " |", "|---|" + "---|" * len(cs.prompts)]
    for m, per in results.items():
        cells = []
        for p in cs.prompts:
            r = per[p]
            kept = f" / {r['diversity_kept']:.0%}" if "diversity_kept" in r else ""
            cells.append(f"{r['alignment']:.3f} / {r['strict_alignment']:.3f}{kept}" + (" (held out)" if r["held_out"] else ""))
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    amort = {m: s for m, s in summary.items() if "alignment_held_out" in s}
    if amort:
        lines += ["", "## Amortised policy: trained vs held-out prompts", "",
                  f"Held out (never trained on): {', '.join(cs.held_out)}.", "",
                  "| method | alignment, trained prompts | alignment, held-out prompts |", "|---|---|---|"]
        for m, s in amort.items():
            lines.append(f"| {m} | {pm(s['alignment_trained'])} | {pm(s['alignment_held_out'])} |")
    if checks:
        lines += ["", "## Criteria (computed from the numbers above)", ""]
        for name, c in checks.items():
            detail = ", ".join(f"{k} {_fmt(v)}" for k, v in c.items() if k != "met")
            lines.append(f"- **{name}**: {'met' if c['met'] else 'NOT met'} ({detail})")
    lines += ["", "Plots: `alignment_vs_evals.png`, `alignment_vs_wall.png` (training-batch alignment on the scored prompts a method "
              "trained on, mean over seeds; "
              "points: methods without training, at their scored alignment). Image grids: `grids/<prompt>.png` (seed 0)."]
    return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) if x is not None else "never" for x in v) + "]"
    return "never" if v is None else str(v)
