"""Score the frozen model (``--policy base``) or a learned noise policy on fresh samples.

How to run::

    python -m find_rl.evaluate --policy base --samples 256 --json base.json
    python -m find_rl.evaluate --world scenes --policy base --samples 64     # per category x split, the default set
    python -m find_rl.evaluate --policy runs/find --samples 256
    python -m find_rl.evaluate --methods base,best-of-16,cem,ddpo,find --out runs/compare   # FIND vs baselines (find_rl.compare)

The scoring itself (alignment with a 95% Wilson interval, strict alignment, diversity) is :mod:`find_rl.evaluation.scoring`;
``--methods`` hands over to the comparison's command line (:mod:`find_rl.compare.cli`). No Ray is needed here.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from find_rl.core import fields
from find_rl.core.fields import at_least, one_of, setting
from find_rl.core.settings import WORLD_NAMES
from find_rl.diffusion.sampler import SamplerSettings
from find_rl.evaluation.scoring import (diversity, evaluate_base, evaluate_distributions, evaluate_policy,  # noqa: F401  (the library API)
                                        score_image_sets, wilson_interval)


@dataclass
class EvaluateSettings:
    """What ``python -m find_rl.evaluate`` scores (its flags are generated from these declarations)."""

    policy: str = setting("base", help="'base' (N(0, I) noise) or a folder written by find_rl.train")
    world: str | None = setting(None, check=one_of(*WORLD_NAMES), cli={"choices": WORLD_NAMES},
                                help="the world whose model and scorer to use (default: the policy's model's world, else shapes)")
    model: str | None = setting(None, help="a pipeline folder or hub id (default: the world's model for base; the policy's "
                                           "otherwise)")
    device: str | None = setting(None, help="device to render on (default: cpu for base, the policy's otherwise)")
    prompts: list | None = setting(None, cli={"nargs": "+"},
                                   help="prompts to score (default: the world's evaluation set / the policy's prompts)")
    samples: int = setting(256, check=lambda v: None if v >= 2 else ">= 2 (diversity compares pairs of images)",
                           help="samples per prompt")
    seed: int = setting(0)
    json: Path | None = setting(None, cli={"type": Path}, help="also write the results as JSON here")
    threads: int = setting(2, check=at_least(1), help="torch CPU threads")
    methods: str | None = setting(None, help="compare methods instead: see python -m find_rl.compare --help")

    def __post_init__(self):
        fields.check_fields(self)


def summarise(result: dict) -> list[dict]:
    """Pooled alignment per (split, category) with 95% Wilson intervals, in the order the prompts came."""
    groups: dict[tuple, list[dict]] = {}
    for r in result["prompts"].values():
        groups.setdefault((r.get("split") or "-", r.get("category") or "-"), []).append(r)
    out = []
    for (split, cat), rows in groups.items():
        n = sum(r["samples"] for r in rows)
        k = sum(round(r["alignment"] * r["samples"]) for r in rows)
        lo, hi = wilson_interval(k, n)
        out.append({"split": split, "category": cat, "prompts": len(rows), "samples": n, "alignment": k / n,
                    "ci_low": lo, "ci_high": hi,
                    "strict_alignment": float(np.mean([r["strict_alignment"] for r in rows]))})
    return out


def format_table(result: dict) -> str:
    lines = [f"policy {result['policy']}  model {result['model']}  samples/prompt {result['samples']}  seed {result['seed']}",
             f"{'prompt':<44} {'split':<16} {'category':<13} {'alignment [95% CI]':<24} {'strict':>7} {'diversity':>10} {'n':>5}"]
    for p, r in result["prompts"].items():
        ci = f"{r['alignment']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
        lines.append(f"{p:<44} {r.get('split') or '-':<16} {r.get('category') or '-':<13} {ci:<24} "
                     f"{r['strict_alignment']:>7.3f} {r['diversity']:>10.2f} {r['samples']:>5}")
    lines.append("")
    lines.append(f"{'split':<16} {'category':<13} {'prompts':>7} {'alignment [95% CI]':<24} {'strict':>7}")
    for s in result["summary"]:
        ci = f"{s['alignment']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}]"
        lines.append(f"{s['split']:<16} {s['category']:<13} {s['prompts']:>7} {ci:<24} {s['strict_alignment']:>7.3f}")
    by_split: dict[str, list[float]] = {}
    for r in result["prompts"].values():
        by_split.setdefault(r.get("split") or "-", []).append(r["alignment"])
    for split, vals in by_split.items():
        lines.append(f"mean over {split} prompts: {np.mean(vals):.3f} ({len(vals)} prompts)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m find_rl.evaluate", description="Score the frozen model or a learned noise policy.")
    fields.add_arguments(p, EvaluateSettings)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a == "--methods" or a.startswith("--methods=") for a in argv):  # the comparison has its own command line
        from find_rl.compare.cli import main as compare_main

        return compare_main(argv)
    args = build_parser().parse_args(argv)
    try:
        s = fields.from_args(EvaluateSettings, args)
        torch.set_num_threads(s.threads)
        if s.json is not None and s.json.parent and not s.json.parent.exists():
            raise ValueError(f"--json folder {s.json.parent} does not exist; create it first")
        if s.policy == "base":
            result = evaluate_base(model=s.model or s.world or "shapes", prompts=s.prompts, samples=s.samples, seed=s.seed,
                                   settings=SamplerSettings(device=s.device or "cpu"), world=s.world)
        else:
            result = evaluate_policy(s.policy, samples=s.samples, seed=s.seed, prompts=s.prompts, model=s.model,
                                     device=s.device, world=s.world)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result["summary"] = summarise(result)
    print(format_table(result))
    if s.json is not None:
        s.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
