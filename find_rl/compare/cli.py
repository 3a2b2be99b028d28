"""``python -m find_rl.compare`` (also ``python -m find_rl.evaluate --methods ...``): train and score every method, for
every seed, at the same budget, and write the report. The flags are generated from
:class:`~find_rl.compare.settings.CompareSettings`; finished runs are reused (:mod:`find_rl.compare.cache`).
"""

from __future__ import annotations

import argparse
import shutil
import sys

import numpy as np

from find_rl.core import fields
from find_rl.compare.cache import cache_path, load_run, run_key, save_run
from find_rl.compare.methods import method_for
from find_rl.compare.report import write_report
from find_rl.compare.settings import CompareSettings


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m find_rl.compare", description="FIND against its baselines at equal budgets.")
    fields.add_arguments(p, CompareSettings)
    return p


def settings_from_args(args: argparse.Namespace) -> CompareSettings:
    """The comparison's settings, every check done (prompts against the world, the device) before anything runs."""
    from find_rl.diffusion.sampler import check_device
    from find_rl.worlds import get_world

    cs = fields.from_args(CompareSettings, args)
    world = get_world(cs.world)
    cs.prompts = list(cs.prompts) or world.default_prompts()
    for p in cs.prompts + list(cs.held_out):
        world.check_prompt(p)
    if cs.world != "shapes" and "ddpo" in cs.methods:
        raise ValueError("ddpo fine-tunes the shapes model's class-conditioned UNet; drop ddpo from --methods with --world "
                         f"{cs.world}")
    check_device(cs.device)
    return cs


def run_comparison(cs: CompareSettings, log=print) -> dict:
    """Every method x seed (reused from the cache when finished with the same settings), then the report."""
    import torch

    from find_rl.rllib.ray_session import ray_session
    from find_rl.rewards.registry import make_reward
    from find_rl.diffusion.sampler import DiffusionSampler, SamplerSettings

    cs.out.mkdir(parents=True, exist_ok=True)
    sampler = DiffusionSampler.from_pretrained(cs.world, SamplerSettings(device=cs.device))
    reward = make_reward(cs.world)
    runs: dict[str, list[dict]] = {}
    with ray_session(actors=cs.ddpo_workers):  # one Ray for every method that uses it (FIND's RLlib, DDPO's Ray Train)
        for method in cs.methods:
            for seed in cs.seeds:
                cache = cache_path(cs, method, seed)
                res = load_run(cache, run_key(cs, method)) if cache.is_file() else None
                if res is not None:
                    log(f"[{method} seed {seed}] reusing {cache}")
                else:
                    log(f"[{method} seed {seed}] running")
                    if cache.parent.exists():  # an unfinished (or differently configured) run of an earlier call: start again
                        shutil.rmtree(cache.parent)
                    torch.set_num_threads(cs.threads)
                    res = method_for(method)(cs, seed, sampler, reward, cache.parent).to_dict() | {"key": run_key(cs, method)}
                    save_run(cache, res)
                runs.setdefault(method, []).append(res)
                for suffix, per in res.get("variants", {}).items():  # the same run scored another way: its own row
                    runs.setdefault(method + suffix, []).append(res | {"per_prompt": per, "history": [], "fresh": [], "variants": {}})
                mean_align = np.mean([r["alignment"] for r in res["per_prompt"].values()])
                log(f"[{method} seed {seed}] alignment {mean_align:.3f}  wall {res['wall_s']:.0f} s")
    return write_report(cs, runs)


def main(argv: list[str] | None = None) -> int:
    import torch

    args = build_parser().parse_args(argv)
    try:
        cs = settings_from_args(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    torch.set_num_threads(cs.threads)
    run_comparison(cs)
    print((cs.out / "report.md").read_text())
    return 0
