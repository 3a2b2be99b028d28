"""The comparison's report: ``results.json``, ``summary.json``, ``report.md``, the curves and the image grids."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from find_rl.compare.settings import CompareSettings
from find_rl.evaluation.diversity import MIN_ALIGNED
from find_rl.evaluation.scoring import CEILING_FILE
from find_rl.compare.stats import aggregate, criteria, frontier


def comparison_plots(histories: dict[str, list[list[dict]]], summary: dict, out: Path, *, prefix: str = "alignment",
                     ylabel: str = "alignment (training batches)", points: bool = True) -> tuple[Path, Path]:
    """Alignment vs reward evaluations per prompt and vs wall-clock (``OUT/<prefix>_vs_evals.png``, ``_vs_wall.png``),
    one line per method (mean over seeds); with ``points``, methods without a curve appear as points at their scored
    alignment (x = their evaluations)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths, style = [], _styles(dict.fromkeys([*summary, *histories]))
    for x_key, label, name in (("reward_evals_per_prompt", "reward evaluations per prompt", f"{prefix}_vs_evals.png"),
                               ("wall_s", "wall-clock seconds (training)", f"{prefix}_vs_wall.png")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for method, seeds in histories.items():
            seeds = [h for h in seeds if h]
            if seeds:
                n = min(len(h) for h in seeds)
                x = np.mean([[r[x_key] for r in h[:n]] for h in seeds], 0)
                y = np.mean([[r["alignment"] for r in h[:n]] for h in seeds], 0)
                ax.plot(x, y, color=style[method][0], label=method)
            elif points and method in summary:
                s = summary[method]
                xv = s["reward_evals"] if x_key == "reward_evals_per_prompt" else s["wall_s"]["mean"]
                ax.scatter([max(xv, 1)], [s["alignment"]["mean"]], marker="*", s=90, color=style[method][0], label=f"{method} (scored)", zorder=3)
        ax.set_xlabel(label)
        ax.set_ylabel(ylabel)
        ax.set_ylim(0, 1.02)
        if x_key == "wall_s":
            ax.set_xscale("symlog", linthresh=1.0)  # fresh-sample curves start at 0 s
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        paths.append(out / name)
    return paths[0], paths[1]


def _styles(methods) -> dict[str, tuple]:
    """One (colour, marker) per method, in the summary's order, so a method looks the same in every plot of the report
    (tab20: 20 colours, not tab10's 10)."""
    import matplotlib.pyplot as plt

    colours, markers = plt.get_cmap("tab20").colors, "osD^vP*Xh<>p"
    return {m: (colours[i % len(colours)], markers[i % len(markers)]) for i, m in enumerate(methods)}


def frontier_plot(summary: dict, path: Path) -> Path | None:
    """Alignment vs aligned diversity kept, one point per method with 95% intervals over seeds; the frontier joined."""
    pts = {m: s for m, s in summary.items() if "aligned_kept" in s}
    if not pts:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5))
    style = _styles(summary)
    for m, s in pts.items():
        ax.errorbar(s["alignment"]["mean"], s["aligned_kept"]["mean"], xerr=s["alignment"]["ci95"], yerr=s["aligned_kept"]["ci95"],
                    fmt=style[m][1], color=style[m][0], capsize=3, label=m)
    front = sorted((pts[m]["alignment"]["mean"], pts[m]["aligned_kept"]["mean"]) for m in frontier(summary))
    if len(front) > 1:
        ax.plot(*zip(*front), "k--", lw=1, label="frontier")
    ax.set_xlabel("alignment (fresh samples)")
    ax.set_ylabel("aligned diversity kept (vs the frozen model's aligned images)")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, max(1.1, max(s["aligned_kept"]["mean"] for s in pts.values()) + 0.1))
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(cs: CompareSettings, runs: dict[str, list[dict]]) -> dict:
    from find_rl.evaluation.report import image_grid
    from find_rl.evaluation.scoring import load_aligned_reference

    ref = load_aligned_reference(cs.world)
    results, summary = aggregate(runs, cs.prompts, ref.get("prompts"), ref.get("sampler"))
    checks = criteria(runs, results, summary, cs.prompts)
    (cs.out / "results.json").write_text(json.dumps(results, indent=2))
    (cs.out / "summary.json").write_text(json.dumps({"methods": summary, "criteria": checks, "settings": {
        "prompts": cs.prompts, "seeds": cs.seeds, "samples": cs.samples, "iterations": cs.iterations,
        "samples_per_prompt": cs.samples_per_prompt, "held_out": cs.held_out, "ddpo_workers": cs.ddpo_workers,
        "amortized_hidden": cs.amortized_hidden, "device": cs.device}}, indent=2))
    comparison_plots({m: [r["history"] for r in rs] for m, rs in runs.items()}, summary, cs.out)
    fresh = {m: [r["fresh"] for r in rs] for m, rs in runs.items() if all(r.get("fresh") for r in rs)}
    if fresh:
        comparison_plots(fresh, summary, cs.out, prefix="fresh_alignment", points=False,
                         ylabel=f"alignment ({cs.checkpoint_samples} fresh samples per prompt at checkpoints)")
    frontier_plot(summary, cs.out / "frontier.png")
    grids = cs.out / "grids"
    grids.mkdir(exist_ok=True)
    for p in cs.prompts:
        image_grid({m: rs[0]["per_prompt"][p]["images"] for m, rs in runs.items() if "images" in rs[0]["per_prompt"][p]},
                   grids / f"{p.replace(' ', '_')}.png", label_width=90)
    (cs.out / "report.md").write_text(format_report(cs, results, summary, checks, fresh))
    return {"results": results, "summary": summary, "criteria": checks}


def _machine(device: str) -> str:
    """The machine the timings come from, in words (the GPU's name where the methods ran on CUDA)."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, {os.cpu_count()} CPU cores"
    return f"CPU only, {os.cpu_count()} cores"


def format_report(cs: CompareSettings, results: dict, summary: dict, checks: dict, fresh: dict | None = None) -> str:
    from find_rl.core.settings import SamplerSettings
    from find_rl.diffusion.sampler import sampler_text
    from find_rl.worlds import get_world

    def pm(d: dict, fmt: str = ".3f") -> str:
        return f"{d['mean']:{fmt}} ± {d['ci95']:{fmt}}"

    world = get_world(cs.world)
    factors = any("aligned_factor_kept" in s for s in summary.values())
    lines = [
        f"# FIND vs baselines on the {cs.world} world",
        "",
        f"Prompts: {', '.join(cs.prompts)}. Seeds: {', '.join(map(str, cs.seeds))}; every number is the mean over seeds ± the "
        f"half-width of its 95% t-interval. Scored on {cs.samples} fresh samples per prompt and seed (the same noise for every "
        f"method of a seed) by {world.scorer_text()}, rendered with {sampler_text(SamplerSettings().resolved(cs.world))} (the "
        f"world's sampler; DDPO's rows: DDIM at its eta); diversity = mean pairwise L2 "
        "distance between a prompt's images, kept = relative to the frozen model's.",
        f"Budget: {cs.iterations} iterations x {cs.samples_per_prompt} samples = {cs.iterations * cs.samples_per_prompt} reward "
        "evaluations per prompt for every trained method; best-of-N spends N per delivered image. Wall and CPU seconds are the "
        f"training (or, for best-of-N, generation) time of one seed on this machine ({_machine(cs.device)}).",
        "",
        "Aligned diversity kept = mean pairwise distance among a method's *aligned* images relative to the frozen model's own "
        f"aligned images under the same sampler settings (rejection sampling, `{_shown(world.model_dir / CEILING_FILE)}`; "
        f"\"-\" for a row rendered with other settings); a prompt with fewer than {MIN_ALIGNED} aligned images counts 0, so "
        "failing a prompt never looks diverse."
        + (" Aligned factor diversity kept = the same on the objects' positions and sizes (the world's factors)." if factors else ""),
        "",
        "| method | alignment | strict | diversity kept | aligned diversity kept (worst prompt) | "
        + ("aligned factor diversity kept (worst prompt) | " if factors else "")
        + "reward evals / prompt | evals per image | wall s | CPU s |",
        "|---|---|---|---|---|---|---|---|---|" + ("---|" if factors else ""),
    ]
    for m, s in summary.items():
        kept = pm(s["diversity_kept"], ".0%") if "diversity_kept" in s else "-"
        cells = [f"{pm(s[k], '.0%')} ({s[f'{k}_min_prompt']:.0%})" if k in s else "-"
                 for k in ("aligned_kept", "aligned_factor_kept")[:1 + factors]]
        lines.append(f"| {m} | {pm(s['alignment'])} | {pm(s['strict_alignment'])} | {kept} | {' | '.join(cells)} | "
                     f"{s['reward_evals']} | {s['evals_per_image']} | {pm(s['wall_s'], '.0f')} | {pm(s['cpu_s'], '.0f')} |")
    front = frontier(summary)
    if front:
        lines += ["", f"On the alignment / aligned-diversity frontier (`frontier.png`): {', '.join(front)}."]
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
    if fresh:
        lines += fresh_table(cs, fresh)
    if checks:
        lines += ["", "## Criteria (computed from the numbers above)", ""]
        for name, c in checks.items():
            detail = ", ".join(f"{k} {_fmt(v)}" for k, v in c.items() if k != "met")
            lines.append(f"- **{name}**: {'met' if c['met'] else 'NOT met'} ({detail})")
    lines += ["", "Plots: `alignment_vs_evals.png`, `alignment_vs_wall.png` (training-batch alignment on the scored prompts a method "
              "trained on, mean over seeds; "
              "points: methods without training, at their scored alignment)"
              + ("; `fresh_alignment_vs_evals.png`, `fresh_alignment_vs_wall.png` (the fresh-sample checkpoints above)" if fresh else "")
              + "; `frontier.png`. Image grids: `grids/<prompt>.png` (seed 0)."]
    return "\n".join(lines) + "\n"


def fresh_table(cs: CompareSettings, fresh: dict[str, list[list[dict]]]) -> list[str]:
    """Fresh-sample alignment at the checkpoints (mean over seeds) and the training loop's seconds to each."""
    its = sorted({r["iteration"] for seeds in fresh.values() for h in seeds for r in h})
    lines = ["", "## Fresh-sample alignment during training (the speed figure)", "",
             f"Each method's policy kept every {cs.checkpoint_every} iterations and scored after training on "
             f"{cs.checkpoint_samples} fresh samples per prompt (the same noise for every method of a seed, its own sampler: "
             "FIND eta 0, DDPO eta 1); mean over seeds, with the training loop's seconds to that iteration (start-up excluded).",
             "", "| method | " + " | ".join(f"it. {i}" for i in its) + " |", "|---|" + "---|" * len(its)]
    for m, seeds in fresh.items():
        cells = []
        for i in its:
            rows = [r for h in seeds for r in h if r["iteration"] == i]
            cells.append(f"{np.mean([r['alignment'] for r in rows]):.3f} ({np.mean([r['wall_s'] for r in rows]):.0f} s)"
                         if len(rows) == len(seeds) else "—")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def _shown(path: Path) -> str:
    """A shipped file's path as the report shows it: relative to the checkout (``find_rl/worlds/...``) where it lies in one."""
    root = Path(__file__).resolve().parents[2]
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) if x is not None else "never" for x in v) + "]"
    return "never" if v is None else str(v)
