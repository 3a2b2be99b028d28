"""Per-iteration rows of a training run, typed, and the run's ``progress.jsonl`` (no Ray).

- :class:`HistoryRow`: the row every method's learning curve is made of (FIND, CEM, the paper's loop, DDPO): iteration,
  reward evaluations per prompt so far, wall seconds of the training loop so far, training-batch alignment (mean and per
  prompt), mean reward.
- :class:`FindProgress`: FIND's richer row, one per iteration, read from RLlib's result (the learner's ``find`` metrics,
  :mod:`find_rl.core.keys`) and written as one JSON line of ``progress.jsonl``; ``history(rows)`` turns a run's rows into
  :class:`HistoryRow`s.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from find_rl.core import keys

PROGRESS_FILE = "progress.jsonl"


#: a progress line lists every prompt's alignment up to this many prompts
PER_PROMPT_LINES = 16

@dataclass
class HistoryRow:
    iteration: int
    reward_evals_per_prompt: int
    wall_s: float  # cumulative seconds of the training loop (start-up excluded)
    alignment: float  # training-batch alignment, mean over the prompts reported
    alignment_per_prompt: dict = field(default_factory=dict)
    reward_mean: float = math.nan

    @classmethod
    def from_row(cls, row: dict) -> "HistoryRow":
        """From a method's own row (a dict with at least these keys; others are its own diagnostics)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in row.items() if k in names})

    def over(self, prompts: list[str]) -> "HistoryRow":
        """The same row with ``alignment`` averaged over ``prompts`` only (those of them this row reports)."""
        have = [self.alignment_per_prompt[p] for p in prompts if p in self.alignment_per_prompt]
        return dataclasses.replace(self, alignment=float(sum(have) / len(have)) if have else self.alignment)


@dataclass
class FindProgress:
    iteration: int
    reward_mean: float
    alignment: float
    alignment_per_prompt: dict
    clip_fraction: float
    approx_kl: float
    calibration_pred_mean: float
    mu_abs_mean: float
    std_mean: float
    samples_invalid: int
    samples: int  # samples the learner trained on this iteration
    seconds: float
    images_per_s: float
    reward_evals_per_prompt: int | float  # a float (the mean) when each iteration draws a subset of the prompts
    ess: float = math.nan  # mass-covering objectives: how well the behaviour's draws cover q* (find_rl/objectives/mass_covering.py)

    @classmethod
    def from_result(cls, result: dict, prompts: list[str], *, iteration: int, seconds: float, images: int,
                    evals_per_prompt: int) -> "FindProgress":
        f = result["learners"]["default_policy"][keys.FIND]
        return cls(iteration=iteration, reward_mean=float(f[keys.REWARD_MEAN]), alignment=float(f.get(keys.ALIGNMENT, math.nan)),
                   alignment_per_prompt={p: float(f[keys.alignment_of(p)]) for p in prompts if keys.alignment_of(p) in f},
                   clip_fraction=float(f[keys.CLIP_FRACTION]), approx_kl=float(f[keys.APPROX_KL]),
                   calibration_pred_mean=float(f[keys.CALIB_PRED_MEAN]), mu_abs_mean=float(f[keys.MU_ABS]),
                   std_mean=float(f[keys.STD_MEAN]), samples_invalid=int(f[keys.SAMPLES_INVALID]), samples=int(f[keys.SAMPLES]),
                   seconds=seconds, images_per_s=images / seconds, reward_evals_per_prompt=evals_per_prompt,
                   ess=float(f.get(keys.ESS, math.nan)))

    @property
    def invalid_fraction(self) -> float:
        return self.samples_invalid / max(self.samples + self.samples_invalid, 1)

    def format(self, total: int, prompts: list[str]) -> str:
        if len(prompts) <= PER_PROMPT_LINES:
            per = " ".join(f"p{i}={self.alignment_per_prompt.get(p, math.nan):.2f}" for i, p in enumerate(prompts))
        else:  # a run over many prompts draws a subset each iteration: too many to list
            per = f"a subset of {len(prompts)} prompts"
        return (f"iter {self.iteration:>3}/{total}  reward {self.reward_mean:.3f}  align {self.alignment:.3f} [{per}]  "
                f"clip {self.clip_fraction:.2f}  kl {self.approx_kl:.4f}  |mu| {self.mu_abs_mean:.2f}  "
                f"std {self.std_mean:.2f}  " + (f"ess {self.ess:.2f}  " if math.isfinite(self.ess) else "")
                + f"{self.images_per_s:.0f} img/s")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def history(rows: list[FindProgress]) -> list[HistoryRow]:
    """A FIND run's learning curve (wall seconds accumulated over its iterations)."""
    out, wall = [], 0.0
    for r in rows:
        wall += r.seconds
        out.append(HistoryRow(iteration=r.iteration, reward_evals_per_prompt=r.reward_evals_per_prompt, wall_s=wall,
                              alignment=r.alignment, alignment_per_prompt=dict(r.alignment_per_prompt), reward_mean=r.reward_mean))
    return out


def restore_progress(path: Path, iterations: int) -> list[FindProgress]:
    """The rows of the first ``iterations`` iterations (those a checkpoint holds); the file is cut to them."""
    rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()][:iterations] if path.is_file() else []
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return [FindProgress(**r) for r in rows]


def append_progress(path: Path, row: FindProgress) -> None:
    with path.open("a") as fh:
        fh.write(json.dumps(row.to_dict()) + "\n")
