"""Sweep ``clip_param`` with Ray Tune: one full FIND run per (clip_param, seed), resumable after interruption.

How to run (the default sweep: 4 clip values x 1 seed x 60 iterations on the shapes world, ~6 min on 2 CPU cores)::

    python -m find_rl.tune --out runs/tune
    python -m find_rl.tune --out runs/tune --clip-grid 0.01 0.2 --seeds 0 1 2 --iterations 40
    python -m find_rl.tune --out runs/tune          # again after Ctrl-C / a crash: resumes (Tuner.restore)
    python -m find_rl.tune --out runs/tune-mc --policy-type flow --objective log-variance --render-replay 256 \
        --beta-grid 0.003 0.001 --prior-share-grid 0.1 0.3      # the mass-covering objective: beta x lambda

Every trial runs the same loop as ``python -m find_rl.train`` (same flags, same seeding) inside a Tune function
trainable, reports each iteration (training-batch alignment, reward, clip fraction, KL, images/s) with an RLlib
checkpoint every ``--checkpoint-every`` iterations, stops early when the training alignment over the last 5
iterations reaches ``--stop-alignment``, and ends by scoring fresh samples and exporting its distributions to
``OUT/trials/clip<c>_seed<s>/``. Each trial reports the same scalars as ``train`` logs; Ray Tune's logger callbacks
write them per trial: TensorBoard events in ``OUT/clip_sweep/<trial>/`` with the swept values as hyperparameters
(``tensorboard --logdir OUT``), and W&B / MLflow with ``--wandb`` / ``--mlflow``; each trial's image grids are
TensorBoard events in its ``OUT/trials/<name>/``. The command prints the table (clip_param -> final rare-prompt
alignment, strict alignment, diversity kept, mean clip fraction, wall time), writes ``OUT/results.md`` and
``OUT/results.json``, and copies the best trial's exported distributions to ``OUT/best/``. Search spaces live in
``tuning/spaces.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

from dataclasses import dataclass

from find_rl.core import fields
from find_rl.core.fields import at_least, setting
from find_rl.tuning.spaces import CLIP_PARAM_GRID, CLIP_SWEEP_OVERRIDES, SEEDS

EXPERIMENT = "clip_sweep"
#: the optional axes of the sweep (a trial's config key -> its column in the table), in the order of the table
AXES = {"kl_coeff": "kl_coeff", "beta": "beta", "prior_share": "prior share"}


def _all(check, what: str):
    return lambda values: None if values and all(check(v) for v in values) else what


@dataclass
class SweepSettings:
    """The sweep's own settings (the run's come from :mod:`find_rl.core.settings`, as for ``train``)."""

    clip_grid: list = setting(factory=lambda: list(CLIP_PARAM_GRID), cli={"type": float, "nargs": "+"},
                              check=_all(lambda c: math.isfinite(c) and c > 0, "finite values > 0"),
                              help="clip_param values to try")
    seeds: list = setting(factory=lambda: list(SEEDS), cli={"type": int, "nargs": "+"}, check=_all(lambda s: True, "seeds"))
    kl_grid: list | None = setting(None, cli={"type": float, "nargs": "+"},
                                   check=_all(lambda k: math.isfinite(k) and k >= 0, "finite values >= 0"),
                                   help="with --policy-type flow: the flow's --kl-coeff (beta) values to cross with the clip grid")
    beta_grid: list | None = setting(None, cli={"type": float, "nargs": "+"},
                                     check=_all(lambda b: math.isfinite(b) and b > 0, "finite values > 0"),
                                     help="with --objective log-variance or iw-mle: the target temperature --beta values to cross "
                                          "with the other axes")
    prior_share_grid: list | None = setting(None, cli={"type": float, "nargs": "+"},
                                            check=_all(lambda s: 0 <= s <= 1, "values in [0, 1]"),
                                            help="with --objective log-variance or iw-mle: the behaviour's --prior-share values "
                                                 "(lambda) to cross with the other axes")
    stop_alignment: float = setting(0.97, check=lambda v: None if v > 0 else "> 0 (above 1: never stop early)",
                                    help="stop a trial once its training alignment, averaged over 5 iterations, reaches this")
    max_concurrent: int | None = setting(None, check=at_least(1), cli={"type": int},
                                         help="trials at a time (default: one per CPU)")

    def __post_init__(self):
        fields.check_fields(self)


def build_parser() -> argparse.ArgumentParser:
    from find_rl import train

    p = train.build_parser()
    p.prog = "python -m find_rl.tune"
    p.description = __doc__.split("\n")[0]
    p.set_defaults(out=Path("runs/tune"), **CLIP_SWEEP_OVERRIDES)
    fields.add_arguments(p.add_argument_group("sweep"), SweepSettings)
    return p


def run_trial(config: dict, *, base: dict) -> None:
    """Tune function trainable: one FIND run (the same :class:`~find_rl.run.find_run.FindRun` loop as ``train``), checkpointed
    through Tune and resumable from Tune's checkpoint."""
    import torch
    from ray import tune

    from find_rl.run.artifacts import finish
    from find_rl.run.find_run import FindRun
    from find_rl.core.settings import RunSettings

    torch.set_num_threads(1)  # one torch thread per trial: trials run side by side, one per CPU
    run = RunSettings.from_dict(base["settings"]).replace(clip_param=float(config["clip_param"]), seed=int(config["seed"]),
                                                          threads=1)
    name = f"clip{run.find.clip_param:g}_seed{run.loop.seed}"
    if "kl_coeff" in config:
        run = run.replace(kl_coeff=float(config["kl_coeff"]))
        name = f"kl{run.find.prior_kl_coeff:g}_" + name
    if "prior_share" in config:
        run = run.replace(prior_share=float(config["prior_share"]))
        name = f"share{config['prior_share']:g}_" + name
    if "beta" in config:
        run = run.replace(beta=float(config["beta"]))
        name = f"beta{config['beta']:g}_" + name
    out = Path(base["trials_dir"]) / name
    out.mkdir(parents=True, exist_ok=True)
    stop_alignment, every, total = base["stop_alignment"], run.loop.checkpoint_every, run.loop.iterations
    with FindRun(run, out, log_scalars=False) as fr:  # its images; Tune's callbacks log what the trial reports
        ckpt = tune.get_checkpoint()
        if ckpt is not None:
            with ckpt.as_directory() as d:
                fr.restore(d)
        started_at = fr.iteration  # > 0 when Tune restored this trial from its checkpoint
        if not _converged(fr.history, stop_alignment):
            for row in fr.iterations(checkpoints=False):
                metrics = {"iteration": row.iteration, **fr.scalars(row)}  # alignment, reward_mean, clip_fraction, ...
                done = _converged(fr.history, stop_alignment)
                if row.iteration % every == 0 or row.iteration == total or done:
                    with tempfile.TemporaryDirectory() as d:
                        fr.algo.save_to_path(d)
                        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
                else:
                    tune.report(metrics)
                if done:
                    break
        it, history = fr.iteration, list(fr.history)
        policy = fr.policy()
    rows = finish(run, out, policy, history)
    last = history[-1].to_dict() if history else {}
    final = {k: last.get(k, math.nan) for k in ("alignment", "reward_mean", "clip_fraction", "approx_kl", "images_per_s")}
    final |= {"iteration": it, "done": True, "trial_dir": str(out), "iterations_run": it, "started_at_iteration": started_at,
              "clip_fraction_mean": float(sum(h.clip_fraction for h in history) / max(len(history), 1)),
              "approx_kl_max": max((h.approx_kl for h in history), default=math.nan)}
    if rows:
        n = len(rows)
        final |= {"final_alignment": sum(r["find_alignment"] for r in rows) / n,
                  "final_strict": sum(r["find_strict"] for r in rows) / n,
                  "final_diversity_kept": sum(r["diversity_kept"] for r in rows) / n,
                  # aligned diversity kept (a prompt under MIN_ALIGNED aligned images counts 0); None without a reference
                  "final_aligned_kept": (None if any(r["aligned_kept"] is None for r in rows)
                                         else sum(r["aligned_kept"] for r in rows) / n),
                  "base_alignment": sum(r["base_alignment"] for r in rows) / n}
    tune.report(final)


def _converged(history, target: float, window: int = 5) -> bool:
    return len(history) >= window and sum(h.alignment for h in history[-window:]) / window >= target


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        if args.resume is not None:
            raise ValueError("find_rl.tune resumes by itself: rerun it with the same --out")
        if args.num_reward_workers:
            raise ValueError("find_rl.tune scores inside each trial; drop --num-reward-workers")
        grid = fields.from_args(SweepSettings, args)
        if grid.kl_grid and args.policy_type != "flow":
            raise ValueError("--kl-grid sweeps the flow's beta; add --policy-type flow")
        args.clip_grid, args.seeds, args.kl_grid = grid.clip_grid, grid.seeds, grid.kl_grid
        args.beta_grid, args.prior_share_grid = grid.beta_grid, grid.prior_share_grid
        args.stop_alignment, args.max_concurrent = grid.stop_alignment, grid.max_concurrent
        args.clip_param = str(args.clip_grid[0])
        from find_rl import train

        run = train.settings_from_args(args)  # every flag checked here, before Ray starts
        objective = run.find.objective
        for flag, values in (("--beta-grid", grid.beta_grid), ("--prior-share-grid", grid.prior_share_grid)):
            if values and objective == "ppo":
                raise ValueError(f"{flag} sweeps the mass-covering objective; add --objective log-variance or iw-mle")
        if objective != "ppo":  # no ratio to clip: one clip value, so that the trials differ only in what they use
            if not any(a == "--clip-grid" or a.startswith("--clip-grid=") for a in argv):
                args.clip_grid = args.clip_grid[:1]
            elif len(args.clip_grid) > 1:
                raise ValueError(f"--objective {objective} has no clip: give --clip-grid one value (or none)")
        out = args.out.resolve()
        out.mkdir(parents=True, exist_ok=True)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from find_rl.rllib.ray_session import ray_session

    try:
        with ray_session(run.resources):
            return sweep(args, run, out)
    except ValueError as e:  # a cluster address that does not answer
        print(f"error: {e}", file=sys.stderr)
        return 2


def sweep(args: argparse.Namespace, run, out: Path) -> int:
    import ray
    from ray import tune

    from find_rl.run.tracking import callbacks
    from find_rl.tuning.spaces import clip_sweep

    base = {"settings": run.to_dict(), "trials_dir": str(out / "trials"), "stop_alignment": args.stop_alignment}
    trainable = tune.with_resources(tune.with_parameters(run_trial, base=base), {"cpu": 1})
    path = out / EXPERIMENT
    t0 = time.perf_counter()
    if tune.Tuner.can_restore(str(path)):
        print(f"resuming the sweep in {path}", flush=True)
        tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_errored=True)
    else:
        max_conc = args.max_concurrent or int(ray.cluster_resources().get("CPU", 1))
        tuner = tune.Tuner(
            trainable,
            param_space=clip_sweep(args.clip_grid, args.seeds, args.kl_grid, beta_grid=args.beta_grid,
                                   prior_share_grid=args.prior_share_grid),
            tune_config=tune.TuneConfig(metric="alignment", mode="max", max_concurrent_trials=max_conc),
            run_config=tune.RunConfig(name=EXPERIMENT, storage_path=str(out), verbose=1,
                                      callbacks=callbacks(run.tracking, out),  # TensorBoard; W&B, MLflow when asked
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=2)),
        )
    results = tuner.fit()
    rows = []
    for r in results:
        m = r.metrics or {}
        rows.append({"clip_param": r.config["clip_param"], "kl_coeff": r.config.get("kl_coeff"), "beta": r.config.get("beta"),
                     "prior_share": r.config.get("prior_share"), "seed": r.config["seed"],
                     "done": bool(m.get("done")),
                     "iterations": m.get("iterations_run", m.get("iteration")),
                     "started_at_iteration": m.get("started_at_iteration"), "final_alignment": m.get("final_alignment"),
                     "final_strict": m.get("final_strict"), "final_diversity_kept": m.get("final_diversity_kept"),
                     "final_aligned_kept": m.get("final_aligned_kept"),
                     "base_alignment": m.get("base_alignment"), "clip_fraction_mean": m.get("clip_fraction_mean"),
                     "approx_kl_max": m.get("approx_kl_max"), "wall_s": m.get("time_total_s"),
                     "trial_dir": m.get("trial_dir"), "error": str(r.error).strip().splitlines()[-1][:200] if r.error else None})
    rows.sort(key=lambda x: tuple(x[k] or 0 for k in AXES) + (x["clip_param"], x["seed"]))
    table = format_table(rows, run)
    print(table)
    (out / "results.md").write_text(table + "\n")
    (out / "results.json").write_text(json.dumps({"sweep_wall_s": time.perf_counter() - t0, "trials": rows}, indent=2))
    done = [x for x in rows if x["done"] and x["final_alignment"] is not None]
    if done:
        best = max(done, key=lambda x: (x["final_alignment"], x["final_diversity_kept"] or 0))
        (out / "best").mkdir(exist_ok=True)
        for f in ("noise_policy.safetensors", "noise_policy.json", "results.md"):
            shutil.copy2(Path(best["trial_dir"]) / f, out / "best" / f)
        axes = "".join(f"{k} {best[k]:g} " for k in AXES if best.get(k) is not None)
        print(f"best: {axes}clip_param {best['clip_param']:g} seed {best['seed']} -> {out / 'best'}")
    return 0 if all(x["done"] for x in rows) else 1


def format_table(rows: list[dict], run) -> str:
    def f(v, fmt):
        return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)

    axes = [k for k in AXES if any(r.get(k) is not None for r in rows)]
    lines = [f"clip_param sweep: lr {run.find.lr}, up to {run.loop.iterations} iterations x {run.samples_per_prompt} samples per "
             f"prompt, scored on {run.loop.eval_samples} fresh samples per prompt", "",
             "| " + "".join(f"{AXES[k]} | " for k in axes) + "clip_param | seed | iterations | alignment (base → final) | strict | "
             "diversity kept | aligned diversity kept | mean clip fraction | max approx KL | wall (s) |",
             "|---" * (len(axes) + 10) + "|"]
    for r in rows:
        status = "" if r["done"] else f" (not finished{': ' + r['error'] if r['error'] else ''})"
        lines.append("| " + "".join(f"{f(r.get(k), 'g')} | " for k in axes) + f"{r['clip_param']:g} | {r['seed']} | {r['iterations']}{status} | "
                     f"{f(r['base_alignment'], '.3f')} → {f(r['final_alignment'], '.3f')} | {f(r['final_strict'], '.3f')} | "
                     f"{f(r['final_diversity_kept'], '.0%')} | {f(r.get('final_aligned_kept'), '.0%')} | "
                     f"{f(r['clip_fraction_mean'], '.3f')} | {f(r['approx_kl_max'], '.4f')} | {f(r['wall_s'], '.0f')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
