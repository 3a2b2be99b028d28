"""The comparison's run cache: ``OUT/runs/<method>_s<seed>/method.json`` (+ ``.npz`` with the grid images). A finished run
is reused on a rerun only when everything it depends on (:func:`run_key`) is unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from find_rl.compare.settings import CompareSettings, method_info

METHOD_FILE = "method.json"


def cache_path(cs: CompareSettings, method: str, seed: int) -> Path:
    return Path(cs.out) / "runs" / f"{method}_s{seed}" / METHOD_FILE


def save_run(path: Path, res: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path.with_suffix(".npz"), **{p: r["images"] for p, r in res["per_prompt"].items() if "images" in r})
    slim = res | {"per_prompt": {p: {k: v for k, v in r.items() if k != "images"} for p, r in res["per_prompt"].items()}}
    path.write_text(json.dumps(slim))


def run_key(cs: CompareSettings, method: str) -> dict:
    """What a finished run depends on: a rerun reuses it only when all of this is unchanged."""
    info = method_info(method)
    key = {"prompts": cs.prompts, "samples": cs.samples, "iterations": cs.iterations, "samples_per_prompt": cs.samples_per_prompt}
    if cs.world != "shapes":  # (runs cached before worlds existed were all on shapes)
        key |= {"world": cs.world}
    if cs.device != "cpu":  # timings (and float rounding) differ by device
        key |= {"device": cs.device}
    sampler = world_sampler_key(cs.world)
    if sampler is not None:
        key |= {"sampler": sampler}
    if info.kind == "ddpo":
        key |= {"ddpo_lr": cs.ddpo_lr, "ddpo_workers": cs.ddpo_workers}
    if info.fresh_checkpoints:
        key |= {"checkpoint_every": cs.checkpoint_every, "checkpoint_samples": cs.checkpoint_samples}
    if info.trains_with_find_run:  # trained through find_rl.run.find_run: its defaults too
        from find_rl.core.settings import RunSettings

        defaults = RunSettings(world=cs.world).to_dict()  # the world's recipe (scenes: the seeded mixture)
        key |= {"run_defaults": {part: defaults[part] for part in ("policy", "find")}}
        if cs.world != "shapes":
            key |= {"reward": defaults["reward"]}
    if info.kind == "amortized":
        key |= {"amortized_hidden": cs.amortized_hidden}
    if info.amortized == "held-out":
        key |= {"held_out": sorted(cs.held_out)}
    return key


def world_sampler_key(world: str) -> dict | None:
    """The sampler every method of a comparison on ``world`` renders with, as a cache key; None where it is the generic
    one (DDIM 10, no guidance), which every run cached before worlds had their own sampler was rendered with."""
    from find_rl.core.settings import SamplerSettings
    from find_rl.evaluation.diversity import sampler_key

    own, generic = sampler_key(SamplerSettings().resolved(world)), sampler_key(SamplerSettings().resolved())
    return None if own == generic else own


def load_run(path: Path, key: dict) -> dict | None:
    res = json.loads(path.read_text())
    if res.get("key") != key:
        return None
    images = np.load(path.with_suffix(".npz"))
    for p, r in res["per_prompt"].items():
        if p in images:
            r["images"] = images[p]
    return res
