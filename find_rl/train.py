"""Train FIND on RLlib: learn, per prompt, a Gaussian over the initial noise that makes a frozen model follow it.

How to run (the defaults train the embedded shapes model on its six rare prompts, ~3 min on 2 CPU cores)::

    python -m find_rl.train --out runs/find
    python -m find_rl.train --out runs/find --prompts "a green circle" "a red square" --iterations 40
    python -m find_rl.train --resume runs/find --iterations 120     # continue up to 120 iterations in total
    python -m find_rl.train --out runs/ablate --no-calibration       # ablations: --clip-param inf, --surrogate clamp

Prints one line per iteration (mean reward, training-batch alignment per prompt, clip fraction, approximate KL,
images/s), writes RLlib checkpoints to ``DIR/checkpoints/``, and at the end writes ``DIR/noise_policy.safetensors``
+ ``DIR/noise_policy.json`` (see :mod:`find_rl.policies.export`), before/after grids ``DIR/grid_<prompt>.png``, the curve
``DIR/curve.png`` and ``DIR/results.md`` / ``DIR/results.csv``, scored on fresh samples from the learned policy.
The flags are generated from :mod:`find_rl.core.settings`; the run itself is :mod:`find_rl.run.find_run`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from find_rl.core import fields
from find_rl.core.settings import PARTS, RunSettings

GROUPS = (("run", RunSettings), ("sampling", PARTS["sampler"]), ("resources", PARTS["resources"]),
          ("policy", PARTS["policy"]), ("policy optimisation", PARTS["find"]), ("loop", PARTS["loop"]),
          ("watching it train (TensorBoard, W&B, MLflow)", PARTS["tracking"]))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m find_rl.train", description=__doc__.split("\n")[0])
    g = p.add_argument_group("output")
    g.add_argument("--out", type=Path, default=Path("runs/find"), help="output folder (checkpoints, policy, report)")
    g.add_argument("--resume", type=Path, default=None, help="continue the run in this folder from its last checkpoint")
    g.add_argument("--prompts-file", type=Path, default=None, help="a text file with one prompt per line")
    for title, cls in GROUPS:
        fields.add_arguments(p.add_argument_group(title), cls)
    return p


def settings_from_args(args: argparse.Namespace) -> RunSettings:
    """The run's settings from parsed flags, resolved against the model (:func:`find_rl.run.find_run.resolve`)."""
    from find_rl.run.find_run import resolve

    if args.recipe is None and args.policy_type is not None:  # a family named: its own defaults, not the world's recipe
        args.recipe = "paper"
    parts = {name: fields.from_args(cls, args) for name, cls in PARTS.items()}
    run = fields.from_args(RunSettings, args, **parts)
    run.check_family(fields.given_names(args))  # a flag of another policy family, even at its default value
    return resolve(run, prompts_file=args.prompts_file)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from find_rl.run.find_run import FindRun, InvalidRewards, load_run_settings, prepare_run_dir

    try:
        if args.resume is not None:  # the run's own settings; only the total number of iterations is new
            saved = load_run_settings(args.resume)
            if isinstance(saved, list):  # a folder from before settings were saved: its flags
                saved = settings_from_args(parser.parse_args(saved))
            run = saved.replace(iterations=args.iterations) if args.iterations is not None else saved
            run_dir = prepare_run_dir(args.resume, run, resume=True)
        else:
            run = settings_from_args(args)
            run_dir = prepare_run_dir(args.out, run, argv=argv)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import torch

    from find_rl.run.artifacts import finish
    from find_rl.rllib.ray_session import ray_session

    torch.set_num_threads(run.resources.threads)
    res = run.resources
    try:
        with ray_session(res, actors=res.num_env_runners + res.num_reward_workers), FindRun(run, run_dir) as fr:
            if args.resume is not None:
                logging.info("resumed at iteration %d of %d", fr.restore(), run.loop.iterations)
            logging.info("prompts: %s", ", ".join(f"p{i}={p!r}" for i, p in enumerate(run.prompts)))
            logging.info("batch: %d prompts x %d samples x %d runner(s) per iteration; latent %s; clip_param %s",
                         len(run.prompts), run.samples_per_prompt, run.runners, run.latent_shape, run.find.clip_param)
            for row in fr.iterations():
                print(row.format(run.loop.iterations, run.prompts), flush=True)
            policy = fr.policy()
            history = fr.history
    except (ValueError, InvalidRewards) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finish(run, run_dir, policy, history)
    results = run_dir / "results.md"
    print(results.read_text() if results.is_file() else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
