"""The comparison's settings, declared once (default, flag, help, check; see :mod:`find_rl.core.fields`), and its method names."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path

from find_rl.core.fields import at_least, check_fields, finite_positive, one_of, setting
from find_rl.core.settings import WORLD_NAMES

#: FIND's own methods: the run settings each changes from ``python -m find_rl.train``'s defaults
FIND_METHODS = {"find": {}, "find-nocal": {"baseline": "none"}, "find-noclip": {"clip_param": math.inf},
                "find-clamp": {"surrogate": "clamp"}}
@dataclass(frozen=True)
class MethodInfo:
    """What a method name means, parsed once (the one place names are matched): its ``kind`` (base, best-of, cem,
    paper, ddpo, find, amortized) and its parameters."""

    name: str
    kind: str
    changes: dict = dataclasses.field(default_factory=dict)  # find / amortized: run-setting changes from train's defaults
    resolution: int | None = None  # cem / paper: the mean's resolution (None: full)
    n: int = 0  # best-of: candidates per delivered image
    amortized: str | None = None  # amortized: "held-out" (trained on every prompt but --held-out) or "all"

    @property
    def trains_with_find_run(self) -> bool:
        """Trained through :mod:`find_rl.run.find_run` (so train's defaults are part of what it depends on)."""
        return self.kind in ("find", "amortized")

    @property
    def fresh_checkpoints(self) -> bool:
        """Scored on fresh samples during training (the speed figure)."""
        return self.kind in ("ddpo", "find", "amortized")


def method_info(name: str) -> MethodInfo:
    """Parse a method name; a one-line ``ValueError`` for an unknown one."""
    fixed = {"base": MethodInfo("base", "base"), "cem": MethodInfo("cem", "cem"), "cem-4x4": MethodInfo("cem-4x4", "cem", resolution=4),
             "find-paper": MethodInfo("find-paper", "paper"),
             "find-paper-4x4": MethodInfo("find-paper-4x4", "paper", resolution=4), "ddpo": MethodInfo("ddpo", "ddpo"),
             "amortized": MethodInfo("amortized", "amortized", amortized="held-out"),
             "amortized-all": MethodInfo("amortized-all", "amortized", amortized="all")}
    if name in fixed:
        return fixed[name]
    if re.fullmatch(r"best-of-[1-9]\d*", name):
        return MethodInfo(name, "best-of", n=int(name.rsplit("-", 1)[1]))
    changes = find_variant(name)
    if changes is None:
        raise ValueError(f"unknown method {name!r}; choose from base, best-of-N (e.g. best-of-16), cem, ddpo, "
                         f"{', '.join(FIND_METHODS)} (each also as NAME+SETTING=VALUE), find-paper, cem-4x4, find-paper-4x4 "
                         "(FIND's C x 4 x 4 mean), amortized, amortized-all")
    return MethodInfo(name, "find", changes=changes)
DEFAULT_HELD_OUT = ("a green circle", "a blue square")


def find_variant(name: str) -> dict | None:
    """A FIND method's settings changes: ``find``, ``find-nocal`` ... and any of them with ``+SETTING=VALUE`` parts
    (e.g. ``find+anchor_coeff=0.01``, ``find+policy_type=flow+kl_coeff=0.05``: run settings by their flat names, values
    read as the setting's type). None when ``name`` is not a FIND method."""
    head, *parts = name.split("+")
    if head not in FIND_METHODS:
        return None
    changes = dict(FIND_METHODS[head])
    for part in parts:
        key, eq, text = part.partition("=")
        if not eq:
            raise ValueError(f"method {name!r}: write {head}+SETTING=VALUE, e.g. find+anchor_coeff=0.01")
        changes[key] = _setting_value(key, text, name)
    return changes


def _setting_value(key: str, text: str, name: str):
    from find_rl.core.settings import PARTS, RENAMED, RunSettings

    key = RENAMED.get(key, key)  # an older name (kl_coeff) still names its setting
    for cls in [*PARTS.values(), RunSettings]:
        for f in dataclasses.fields(cls):
            if f.name == key:
                if f.metadata.get("parse"):
                    return f.metadata["parse"](text)
                default = f.default if f.default is not dataclasses.MISSING else None
                if isinstance(default, bool):
                    return text.lower() in ("1", "true", "yes")
                kind = type(default) if isinstance(default, (int, float)) else f.metadata.get("cli", {}).get("type", str)
                try:
                    return kind(text)
                except ValueError:
                    raise ValueError(f"method {name!r}: {key}={text!r} is not a {kind.__name__}") from None
    raise ValueError(f"method {name!r}: unknown setting {key!r} (use the flat names of find_rl.core.settings)")


def parse_methods(text: str) -> list[str]:
    methods = [m.strip() for m in str(text).split(",") if m.strip()]
    if not methods:
        raise ValueError("--methods is empty; e.g. --methods base,best-of-16,cem,ddpo,find")
    for m in methods:
        method_info(m)  # an unknown name ends here
    if len(set(methods)) != len(methods):
        raise ValueError("--methods lists a method twice")
    return methods


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers, got {text!r}") from None
    if not seeds:
        raise ValueError(f"--seeds names no seed, got {text!r}; write e.g. 0,1,2")
    return seeds


@dataclass
class CompareSettings:
    methods: list = setting(factory=list, parse=parse_methods,
                            help="comma-separated: base, best-of-N, cem, ddpo, find, find-nocal, find-noclip, find-clamp, "
                                 "find-paper, amortized, amortized-all")
    out: Path | None = setting(None, cli={"type": Path}, help="the report folder (results.json, report.md, plots)")
    world: str = setting("shapes", check=one_of(*WORLD_NAMES), cli={"choices": WORLD_NAMES},
                         help="the embedded world every method runs on (its model, its exact scorer)")
    prompts: list = setting(factory=list, cli={"nargs": "+"}, help="scored prompts (default: the world's default training prompts)")
    seeds: list = setting(factory=lambda: [0, 1, 2], parse=parse_seeds, help="comma-separated seeds")
    samples: int = setting(256, check=at_least(2), help="fresh samples per prompt and seed for scoring")
    iterations: int = setting(80, check=at_least(1), help="training iterations of every trained method")
    samples_per_prompt: int = setting(32, check=at_least(2), help="reward evaluations per prompt per iteration")
    held_out: list = setting(factory=lambda: list(DEFAULT_HELD_OUT), cli={"nargs": "+"},
                             help="with amortized: prompts never trained on")
    ddpo_workers: int = setting(2, check=at_least(1), help="with ddpo: Ray Train data-parallel workers")
    ddpo_lr: float = setting(1e-3, check=finite_positive, help="with ddpo: learning rate of the fine-tuned denoiser")
    amortized_hidden: int = setting(64, check=at_least(0), help="with amortized[-all]: hidden units of the MLP path")
    checkpoint_every: int = setting(10, check=at_least(0),
                                    help="score FIND's and DDPO's policies on fresh samples every this many iterations "
                                         "(the speed figure; 0: only at the end)")
    checkpoint_samples: int = setting(32, check=at_least(2), help="fresh samples per prompt at each checkpoint")
    threads: int = setting(2, check=at_least(1), help="torch CPU threads")
    grid_images: int = setting(8, flag="", check=at_least(1))
    device: str = setting("cpu", help="where every method trains and renders ('cuda': DDPO's Ray Train workers take one GPU each)")

    def __post_init__(self):
        check_fields(self)
        if not self.methods:
            raise ValueError("--methods is empty; e.g. --methods base,best-of-16,cem,ddpo,find")
        if self.out is None:
            raise ValueError("--methods needs --out DIR (the report folder)")
        if self.samples_per_prompt % self.ddpo_workers and "ddpo" in self.methods:
            raise ValueError(f"--samples-per-prompt {self.samples_per_prompt} must divide evenly over --ddpo-workers {self.ddpo_workers}")
        if Path(self.out).exists() and not Path(self.out).is_dir():
            raise ValueError(f"--out {self.out} is a file; choose a folder")

    def to_dict(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}
