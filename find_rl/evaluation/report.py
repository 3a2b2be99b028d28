"""The end-of-run artefacts: before/after image grids, the learning curve and the results table."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from find_rl.evaluation.diversity import aligned_kept, kept_text
from find_rl.diffusion.images import to_pil


def image_grid(rows: dict[str, np.ndarray], path: Path, *, scale: int = 4, pad: int = 2, label_width: int = 60) -> Path:
    """Save one row of images per label (``{label: (N, 3, H, W) in [-1, 1]}``) as a PNG with the labels on the left."""
    tiles = {label: to_pil(imgs, scale=scale) for label, imgs in rows.items()}
    w, h = next(iter(tiles.values()))[0].size
    n = max(len(t) for t in tiles.values())
    label_w = label_width
    canvas = Image.new("RGB", (label_w + n * (w + pad), len(tiles) * (h + pad)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for r, (label, ims) in enumerate(tiles.items()):
        draw.text((4, r * (h + pad) + h // 2 - 5), label, fill=(0, 0, 0))
        for c, im in enumerate(ims):
            canvas.paste(im, (label_w + c * (w + pad), r * (h + pad)))
    canvas.save(path)
    return path


def captioned_grid(paths: list[str], caption: str, *, columns: int = 8, pad: int = 2, caption_height: int = 16) -> Image.Image:
    """The images at ``paths`` (one size) tiled ``columns`` wide under a one-line caption (the prompt)."""
    tiles = [Image.open(p).convert("RGB") for p in paths]
    w, h = tiles[0].size
    cols = min(columns, len(tiles))
    rows = -(-len(tiles) // cols)
    grid = Image.new("RGB", (pad + cols * (w + pad), caption_height + pad + rows * (h + pad)), (255, 255, 255))
    ImageDraw.Draw(grid).text((pad, 2), caption, fill=(0, 0, 0))
    for i, tile in enumerate(tiles):
        grid.paste(tile, (pad + (i % cols) * (w + pad), caption_height + pad + (i // cols) * (h + pad)))
    return grid


#: the curve draws one line per prompt up to this many prompts
CURVE_PROMPTS = 16


def plot_curves(history: list[dict], prompts: list[str], path: Path) -> Path:
    """Mean reward and per-prompt training-batch alignment against reward evaluations per prompt."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [h["reward_evals_per_prompt"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    a1.plot(x, [h["reward_mean"] for h in history], label="mean reward")
    a1.plot(x, [h["alignment"] for h in history], label="mean alignment")
    a1.set_xlabel("reward evaluations per prompt")
    a1.set_ylim(0, 1.02)
    a1.legend()
    a1.set_title("training batches")
    if len(prompts) <= CURVE_PROMPTS:
        for p in prompts:
            a2.plot(x, [h["alignment_per_prompt"].get(p, np.nan) for h in history], label=p)
        a2.set_title("alignment per prompt (training batches)")
        a2.legend(fontsize=7)
    else:  # many prompts, a subset drawn each iteration: the batch's alignment is the curve (left)
        a2.plot(x, [h["alignment"] for h in history], label="alignment of the drawn prompts")
        a2.set_title(f"{len(prompts)} prompts, a subset drawn per iteration")
        a2.legend(fontsize=7)
    a2.set_xlabel("reward evaluations per prompt")
    a2.set_ylim(0, 1.02)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


COLUMNS = ("prompt", "base_alignment", "find_alignment", "base_strict", "find_strict", "base_diversity", "find_diversity",
           "diversity_kept", "find_aligned_count", "find_aligned_diversity", "ceiling_aligned_diversity", "aligned_kept",
           "find_aligned_factor_diversity", "ceiling_aligned_factor_diversity", "aligned_factor_kept", "samples", "held_out")
_MEANS = ("base_alignment", "find_alignment", "base_strict", "find_strict", "base_diversity", "find_diversity", "diversity_kept")


def results_rows(base: dict, find: dict, *, held_out=(), ceiling: dict | None = None) -> list[dict]:
    """One row per prompt; ``ceiling``: the frozen model's aligned images per prompt (:func:`find_rl.evaluation.scoring.aligned_ceiling`),
    against which the aligned diversity is "kept"."""
    rows = []
    for p, f in find.items():
        b, c = base[p], (ceiling or {}).get(p, {})
        kept = aligned_kept(f, c)
        factor_kept = aligned_kept(f, c, key="aligned_factor_diversity")  # None: a world without factors, or no reference
        rows.append({"prompt": p, "base_alignment": b["alignment"], "find_alignment": f["alignment"],
                     "base_strict": b["strict_alignment"], "find_strict": f["strict_alignment"],
                     "base_diversity": b["diversity"], "find_diversity": f["diversity"],
                     "diversity_kept": f["diversity"] / max(b["diversity"], 1e-9), "find_aligned_count": f.get("aligned_count"),
                     "find_aligned_diversity": f.get("aligned_diversity"), "ceiling_aligned_diversity": c.get("aligned_diversity"),
                     "aligned_kept": kept, "find_aligned_factor_diversity": f.get("aligned_factor_diversity"),
                     "ceiling_aligned_factor_diversity": c.get("aligned_factor_diversity"), "aligned_factor_kept": factor_kept,
                     "samples": f["samples"], "held_out": p in held_out})
    return rows


def _pct(v) -> str:
    return "—" if v is None else f"{v:.0%}"


def write_results(rows: list[dict], out: Path, *, header: str = "") -> tuple[Path, Path]:
    csv_path, md_path = out / "results.csv", out / "results.md"
    with csv_path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    factors = any(r.get("aligned_factor_kept") is not None for r in rows)  # a world with factors and a reference
    lines = [header, "", "| prompt | alignment base → FIND | strict base → FIND | diversity base → FIND (kept) | "
             "aligned diversity kept (aligned images) |" + (" aligned factor diversity kept |" if factors else ""),
             "|---|---|---|---|---|" + ("---|" if factors else "")]
    for r in rows:
        name = r["prompt"] + (" *(held out)*" if r.get("held_out") else "")
        lines.append(f"| {name} | {r['base_alignment']:.3f} → {r['find_alignment']:.3f} | {r['base_strict']:.3f} → "
                     f"{r['find_strict']:.3f} | {r['base_diversity']:.2f} → {r['find_diversity']:.2f} ({r['diversity_kept']:.0%}) | "
                     f"{kept_text(r.get('aligned_kept'), r.get('find_aligned_count'))} ({r.get('find_aligned_count')}) |"
                     + (f" {kept_text(r.get('aligned_factor_kept'), r.get('find_aligned_count'))} |" if factors else ""))
    for label, group in (("mean", [r for r in rows if not r.get("held_out")]), ("mean, held out", [r for r in rows if r.get("held_out")])):
        if not group:
            continue
        mean = {k: float(np.mean([r[k] for r in group])) for k in _MEANS}

        def kept_mean(key: str) -> str:  # a failed prompt counts 0; "—" unless every prompt has a reference
            kept = [r[key] for r in group if r.get(key) is not None]
            return f"{_pct(float(np.mean(kept)))} (min {_pct(min(kept))})" if kept and len(kept) == len(group) else "—"

        lines.append(f"| **{label}** | {mean['base_alignment']:.3f} → **{mean['find_alignment']:.3f}** | {mean['base_strict']:.3f} → "
                     f"{mean['find_strict']:.3f} | {mean['base_diversity']:.2f} → {mean['find_diversity']:.2f} ({mean['diversity_kept']:.0%}) | "
                     f"{kept_mean('aligned_kept')} |" + (f" {kept_mean('aligned_factor_kept')} |" if factors else ""))
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


def split_category_table(base: dict[str, dict], find: dict[str, dict], *, trained: set[str] | frozenset = frozenset()
                         ) -> list[str]:
    """Markdown lines: pooled alignment of the frozen model and of FIND per (split, category), with 95% Wilson
    intervals and the gain, then per split GenEval's overall (the mean over its categories). ``base``/``find``: per-prompt
    results of :func:`find_rl.evaluation.scoring.evaluate_distributions` on the same prompts and noise; a prompt the
    policy trained on is marked in the "trained" column (held-out splits never are)."""
    from find_rl.evaluation.scoring import wilson_interval

    groups: dict[tuple, list[str]] = {}
    for p, r in find.items():
        groups.setdefault((r.get("split") or "-", r.get("category") or "-"), []).append(p)

    def pooled(res: dict, prompts: list[str]) -> tuple[float, float, float]:
        n = sum(res[p]["samples"] for p in prompts)
        k = sum(round(res[p]["alignment"] * res[p]["samples"]) for p in prompts)
        lo, hi = wilson_interval(k, n)
        return k / n, lo, hi

    lines = ["| split | category | prompts (trained) | frozen model [95% CI] | FIND [95% CI] | gain |", "|---|---|---|---|---|---|"]
    overall: dict[str, list[tuple[float, float]]] = {}
    for (split, cat), prompts in groups.items():
        b, f = pooled(base, prompts), pooled(find, prompts)
        n_trained = sum(p in trained for p in prompts)
        lines.append(f"| {split} | {cat} | {len(prompts)} ({n_trained}) | {b[0]:.3f} [{b[1]:.2f}, {b[2]:.2f}] | "
                     f"{f[0]:.3f} [{f[1]:.2f}, {f[2]:.2f}] | {f[0] - b[0]:+.3f} |")
        overall.setdefault(split, []).append((b[0], f[0]))
    lines += ["", "| split | GenEval overall (mean over categories): frozen model → FIND | gain |", "|---|---|---|"]
    for split, vals in overall.items():
        b, f = float(np.mean([v[0] for v in vals])), float(np.mean([v[1] for v in vals]))
        lines.append(f"| {split} | {b:.3f} → {f:.3f} | {f - b:+.3f} |")
    return lines
