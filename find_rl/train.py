"""Train FIND on RLlib: learn, per prompt, a Gaussian over the initial noise that makes a frozen model follow it.

How to run (the defaults train the embedded shapes model on its six rare prompts, ~3 min on 2 CPU cores)::

    python -m find_rl.train --out runs/find
    python -m find_rl.train --out runs/find --prompts "a green circle" "a red square" --iterations 40
    python -m find_rl.train --resume runs/find --iterations 120     # continue up to 120 iterations in total
    python -m find_rl.train --out runs/ablate --no-calibration       # ablations: --clip-param inf, --surrogate clamp

Prints one line per iteration (mean reward, training-batch alignment per prompt, clip fraction, approximate KL,
images/s), writes RLlib checkpoints to ``DIR/checkpoints/``, and at the end writes ``DIR/noise_policy.safetensors``
+ ``DIR/noise_policy.json`` (see :mod:`find_rl.export`), before/after grids ``DIR/grid_<prompt>.png``, the curve
``DIR/curve.png`` and ``DIR/results.md`` / ``DIR/results.csv``, scored on fresh samples from the learned policy.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

from find_rl.settings import FindSettings, RunSettings

logger = logging.getLogger("find_rl.train")
RUN_FILE = "run.json"
PROGRESS_FILE = "progress.jsonl"


def _clip(v: str) -> float | None:
    if v.lower() in ("inf", "none", "off"):
        return None
    try:
        return float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--clip-param must be a number or 'inf', got {v!r}") from None


def _resources(specs: list[str]) -> dict[str, float]:
    out = {}
    for spec in specs:
        name, eq, amount = spec.partition("=")
        try:
            out[name.strip()] = float(amount)
        except ValueError:
            raise ValueError(f"--env-runner-resources {spec!r}: write NAME=AMOUNT, e.g. sampler=1") from None
        if not eq or not name.strip() or out[name.strip()] <= 0:
            raise ValueError(f"--env-runner-resources {spec!r}: write NAME=AMOUNT with AMOUNT > 0, e.g. sampler=1")
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m find_rl.train", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("run")
    g.add_argument("--out", type=Path, default=Path("runs/find"), help="output folder (checkpoints, policy, report)")
    g.add_argument("--resume", type=Path, default=None, help="continue the run in this folder from its last checkpoint")
    g.add_argument("--iterations", type=int, default=80, help="total iterations of the run (a resumed run counts from 0)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--prompts", nargs="+", default=None, help="prompts to train (default: the shapes world's rare prompts)")
    g.add_argument("--prompts-file", type=Path, default=None, help="a text file with one prompt per line")
    g.add_argument("--model", default="shapes", help="'shapes', a diffusers pipeline folder or a hub id")
    g.add_argument("--reward", action="append", default=None, metavar="NAME[=PATH][:WEIGHT]",
                   help="reward (repeat for a weighted sum): shapes, shapes-strict, clip=PATH, pickscore=PATH, aesthetic=PATH, "
                        "xclip=PATH (video); default shapes")
    g.add_argument("--checkpoint-every", type=int, default=10, help="iterations between checkpoints")
    g.add_argument("--max-invalid-fraction", type=float, default=0.25,
                   help="stop (after a checkpoint) when more than this fraction of an iteration's rewards are NaN/inf")
    g.add_argument("--eval-samples", type=int, default=256, help="fresh samples per prompt for the final report (0: skip)")
    g.add_argument("--threads", type=int, default=2, help="torch CPU threads in this process")
    g.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    g.add_argument("--dashboard", action="store_true", help="start the Ray dashboard (bound to 127.0.0.1) for a local Ray")
    g.add_argument("--dashboard-port", type=int, default=8265)
    s = p.add_argument_group("sampling")
    s.add_argument("--samples-per-prompt", type=int, default=32, help="images per prompt per iteration (per env runner)")
    s.add_argument("--num-env-runners", type=int, default=0, help="env-runner actors (0: sample in this process)")
    s.add_argument("--num-gpus-per-env-runner", type=float, default=0.0, help="fractional: several runners share a GPU")
    s.add_argument("--env-runner-resources", nargs="+", default=[], metavar="NAME=AMOUNT",
                   help="custom Ray resources each env runner needs (pins runners to node types, e.g. sampler=1)")
    s.add_argument("--device", default="cpu", help="device of the frozen model in each env runner")
    s.add_argument("--num-reward-workers", "--num-scorers", type=int, default=0,
                   help="reward-scorer actors shared by the env runners (0: score inside each env runner)")
    s.add_argument("--num-gpus-per-reward-worker", "--num-gpus-per-scorer", type=float, default=0.0, help="GPU share of each scorer actor (fractional ok)")
    s.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32",
                   help="dtype of the frozen model and reward models (float16/bfloat16 on GPU)")
    s.add_argument("--compile-unet", action="store_true", help="torch.compile + channels_last for the denoiser (GPU fast path)")
    s.add_argument("--num-frames", type=int, default=None, help="video pipelines: frames per clip (default: the pipeline's)")
    s.add_argument("--num-inference-steps", type=int, default=10)
    s.add_argument("--guidance-scale", type=float, default=1.0)
    s.add_argument("--eta", type=float, default=0.0, help="DDIM eta (0 = deterministic; > 0 makes the reward noisy)")
    o = p.add_argument_group("policy optimisation")
    o.add_argument("--lr", type=float, default=0.05)
    o.add_argument("--clip-param", type=_clip, default=0.2, help="PPO ratio clip on the per-element ratio; 'inf' = none")
    o.add_argument("--num-epochs", type=int, default=4)
    o.add_argument("--minibatches-per-epoch", type=int, default=1)
    o.add_argument("--surrogate", choices=("ppo", "clamp"), default="ppo", help="'clamp' = the released code's clamp-only loss")
    o.add_argument("--anchor", choices=("kl", "l2", "none"), default="kl", help="regulariser toward N(0, I)")
    o.add_argument("--anchor-coeff", type=float, default=0.0, help="anchor weight (initial weight if --target-alignment)")
    o.add_argument("--target-alignment", type=float, default=None,
                   help="adapt each prompt's anchor weight to hold its training alignment at this level (keeps diversity)")
    o.add_argument("--no-calibration", action="store_true", help="ablation: train on raw rewards (no g)")
    o.add_argument("--calibration-normalize", choices=("prompt", "batch", "none"), default="prompt")
    o.add_argument("--mean-resolution", type=lambda v: None if v == "full" else int(v), default=4,
                   help="spatial resolution of the learned mean (upsampled), or 'full'")
    o.add_argument("--mean-highpass", type=int, default=None, help="remove the learned mean's k x k block averages")
    o.add_argument("--std-mode", choices=("scalar", "element"), default="scalar")
    o.add_argument("--learn-std", action=argparse.BooleanOptionalAction, default=False, help="learn sigma (default: sigma = 1)")
    o.add_argument("--min-std", type=float, default=0.5)
    o.add_argument("--policy-type", choices=("per-prompt", "amortized"), default="per-prompt",
                   help="'amortized': one prompt-conditioned policy mu, sigma = f(text embedding) for all prompts")
    o.add_argument("--amortized-hidden", type=int, default=64, help="amortized only: hidden units of an MLP path beside the linear one (0: mu linear in the embedding)")
    o.add_argument("--amortized-rank", type=int, default=0,
                   help="amortized only: rank of a channel x space path, mu[c, x] = sum_r u_r(e)[c] v_r(e)[x] (0: none)")
    o.add_argument("--amortized-linear", action=argparse.BooleanOptionalAction, default=True,
                   help="amortized only: keep the path linear in the embedding")
    o.add_argument("--eval-prompts", nargs="+", default=[],
                   help="amortized only: held-out prompts (never trained on) to export and score next to the trained ones")
    return p


def read_prompts(args: argparse.Namespace) -> list[str]:
    from find_rl.shapes.world import rare_prompts

    if args.prompts_file is not None:
        if not args.prompts_file.is_file():
            raise ValueError(f"prompts file {args.prompts_file} does not exist")
        prompts = [ln.strip() for ln in args.prompts_file.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        if not prompts:
            raise ValueError(f"prompts file {args.prompts_file} holds no prompts; write one prompt per line")
    elif args.prompts is not None:
        prompts = [p.strip() for p in args.prompts]
        if not prompts or not all(prompts):
            raise ValueError("--prompts got an empty prompt; pass non-empty prompts like 'a green circle'")
    else:
        prompts = rare_prompts() if args.model == "shapes" else []
    if len(set(prompts)) != len(prompts):
        raise ValueError("--prompts lists a prompt twice; each prompt gets one distribution")
    if args.model == "shapes":
        from find_rl.shapes.world import parse_prompt

        for p in prompts + list(args.eval_prompts):
            parse_prompt(p)
    return prompts


def settings_from_args(args: argparse.Namespace) -> tuple[RunSettings, FindSettings]:
    if args.iterations < 1:
        raise ValueError(f"--iterations must be >= 1, got {args.iterations}")
    if args.checkpoint_every < 1:
        raise ValueError(f"--checkpoint-every must be >= 1, got {args.checkpoint_every}")
    if not 0.0 <= args.max_invalid_fraction <= 1.0:
        raise ValueError(f"--max-invalid-fraction must be in [0, 1], got {args.max_invalid_fraction}")
    if args.clip_param is not None and not args.clip_param > 0:  # NaN fails too
        raise ValueError(f"--clip-param must be > 0 (or 'inf' for no clipping), got {args.clip_param}")
    if args.eval_samples < 0 or args.eval_samples == 1:
        raise ValueError(f"--eval-samples must be 0 (no final report) or >= 2 (diversity compares pairs), got {args.eval_samples}")
    if args.dashboard and not 1 <= args.dashboard_port <= 65535:
        raise ValueError(f"--dashboard-port must be in [1, 65535], got {args.dashboard_port}")
    from find_rl.sampler import DiffusionSampler, SamplerSettings, check_device

    # the sampler's own checks (steps, guidance, eta, dtype) before anything loads; the device is checked here unless
    # the env runners sample on a cluster's other nodes (which may hold GPUs this driver lacks)
    SamplerSettings(num_inference_steps=args.num_inference_steps, guidance_scale=args.guidance_scale, eta=args.eta,
                    device=args.device, dtype=args.dtype, num_frames=args.num_frames)
    if args.num_env_runners == 0 or not (args.address or os.environ.get("RAY_ADDRESS")):
        check_device(args.device)

    prompts = read_prompts(args)
    reward = args.reward or ["shapes"]
    run = RunSettings(model=args.model, reward=reward[0] if len(reward) == 1 else reward, prompts=prompts, samples_per_prompt=args.samples_per_prompt,
                      num_env_runners=args.num_env_runners, num_gpus_per_env_runner=args.num_gpus_per_env_runner,
                      env_runner_resources=_resources(args.env_runner_resources),
                      num_reward_workers=args.num_reward_workers, num_gpus_per_reward_worker=args.num_gpus_per_reward_worker,
                      device=args.device, dtype=args.dtype, compile_unet=args.compile_unet, num_frames=args.num_frames, num_inference_steps=args.num_inference_steps, guidance_scale=args.guidance_scale,
                      eta=args.eta, lr=args.lr, clip_param=args.clip_param, num_epochs=args.num_epochs,
                      minibatches_per_epoch=args.minibatches_per_epoch, mean_resolution=args.mean_resolution, mean_highpass=args.mean_highpass,
                      std_mode=args.std_mode, learn_std=args.learn_std, min_std=args.min_std, seed=args.seed,
                      policy_type=args.policy_type, amortized_hidden=args.amortized_hidden,
                      amortized_rank=args.amortized_rank, amortized_linear=args.amortized_linear, eval_prompts=[p.strip() for p in args.eval_prompts],
                      torch_threads=args.threads if args.num_env_runners == 0 else 1)
    from find_rl.rewards import RewardSpec

    for spec in reward:
        RewardSpec.parse(spec)  # names and forms checked here; the env runners load the reward models
    # also checks that the model loads and fits (frames included for video pipelines)
    run.latent_shape = DiffusionSampler.from_pretrained(args.model, SamplerSettings(num_frames=args.num_frames)).latent_shape
    find = FindSettings(surrogate=args.surrogate, anchor=args.anchor, anchor_coeff=args.anchor_coeff,
                        target_alignment=args.target_alignment,
                        calibration=not args.no_calibration, calibration_normalize=args.calibration_normalize)
    run.validate()
    return run, find


def prepare_run_dir(args: argparse.Namespace, argv: list[str]) -> Path:
    """Check the output folder (or the folder to resume; ``main`` has read its run.json) and record the run's arguments."""
    from find_rl.checkpoints import latest_checkpoint

    if args.resume is not None:
        d = args.resume
        if latest_checkpoint(d) is None:
            raise ValueError(f"--resume {d}: no complete checkpoint in {d}/checkpoints; start a new run with --out")
        return d
    d = args.out
    if (d / RUN_FILE).exists() and latest_checkpoint(d) is not None:
        raise ValueError(f"{d} already holds a run; use --resume {d} to continue it, or choose another --out")
    # (a run.json without any checkpoint is a run that died before its first checkpoint: start it afresh)
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe = d / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"cannot write to output folder {d} ({e.strerror}); choose a writable --out") from None
    (d / RUN_FILE).write_text(json.dumps({"argv": argv}, indent=2))
    return d


def check_address(address: str, timeout: float = 5.0) -> None:
    """A one-line error, fast, for a Ray address that does not answer (``ray.init`` would retry for minutes)."""
    import socket
    from urllib.parse import urlparse

    if address in ("auto", "local") or address.startswith("ray://"):
        return
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    try:
        port = parsed.port
    except ValueError:
        port = None
    if not parsed.hostname or not port:
        raise ValueError(f"--address {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379), 'auto' or ray://HOST:PORT")
    try:
        socket.create_connection((parsed.hostname, port), timeout=timeout).close()
    except OSError as e:
        raise ValueError(f"Ray cluster at {address} does not answer ({e.strerror or e}); start it (ray start --head) or fix "
                         "--address / $RAY_ADDRESS") from None


def iteration_seed(seed: int, iteration: int) -> int:
    """The RNG seed of one iteration: a run resumed at iteration k draws exactly the noise an uninterrupted run would."""
    return (seed * 1_000_003 + iteration) % (2**31 - 1)


def _seed_env_runner(env_runner, *, seed: int, iteration: int) -> None:
    """Seed one env runner's exploration RNG (torch draws the noise); each runner gets its own stream.

    A runner that has sampled before starts each ``sample()`` with a reset step (NEXT_STEP autoreset) whose action
    draw, B x D normals, is discarded; a runner built fresh (a resumed run, a restarted actor) starts with a plain
    reset and no such draw. From iteration 1 on, a fresh runner makes that draw itself, so that a resumed run
    samples exactly the noise an uninterrupted run would.
    """
    import numpy as np
    import torch

    s = (seed + 7919 * int(getattr(env_runner, "worker_index", 0))) % (2**31 - 1)
    torch.manual_seed(s)
    np.random.seed(s)
    # (the driver's local runner has no env when remote runners sample: it never draws)
    if iteration > 0 and getattr(env_runner, "env", None) is not None and getattr(env_runner, "_needs_initial_reset", False):
        space = env_runner.env.single_action_space
        torch.normal(torch.zeros(env_runner.num_envs, *space.shape), torch.ones(env_runner.num_envs, *space.shape))


def train_iteration(algo, run: RunSettings, it: int) -> dict:
    """Iteration ``it`` (0-based): seed every env runner's stream for it, ``algo.train()``, the progress row."""
    t0 = time.perf_counter()
    algo.env_runner_group.foreach_env_runner(
        functools.partial(_seed_env_runner, seed=iteration_seed(run.seed, it), iteration=it), local_env_runner=True)
    result = algo.train()
    return summarize(result, run.prompts, it + 1, time.perf_counter() - t0, run.batch_size * run.runners,
                     (it + 1) * run.samples_per_prompt_per_iteration)


def restore_progress(path: Path, iterations: int) -> list[dict]:
    """The progress rows of the first ``iterations`` iterations (those a checkpoint holds); the file is cut to them."""
    rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()][:iterations] if path.is_file() else []
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def append_progress(path: Path, row: dict) -> None:
    with path.open("a") as fh:
        fh.write(json.dumps(row) + "\n")


def start_scorers(run: RunSettings):
    """The reward-scorer actor pool the env runners will connect to (``None`` when scoring in-process)."""
    if run.num_reward_workers < 1:
        return None
    from find_rl.scorers import ScorerPool

    gpu = run.num_gpus_per_reward_worker > 0  # a scorer without a GPU share scores on its CPU, in float32
    return ScorerPool.create(run.reward, run.num_reward_workers, device="cuda" if gpu else "cpu",
                             dtype=run.dtype if gpu else "float32", num_gpus=run.num_gpus_per_reward_worker)


def final_distributions(algo, run: RunSettings):
    """The learned ``(mean, std)``, each ``(prompts, *latent_shape)``: the trained prompts, then ``run.eval_prompts``
    (held-out prompts, which only the amortised policy answers, from their text embeddings)."""
    import torch

    module = algo.get_module()
    prompts = list(run.prompts) + list(run.eval_prompts)
    with torch.no_grad():
        if run.policy_type == "amortized":
            from find_rl.envs.noise_bandit import prompt_features
            from find_rl.models import load_pipeline

            emb = prompt_features(load_pipeline(run.model), prompts)[:, len(prompts):]
            obs = torch.cat([torch.zeros(len(prompts), len(run.prompts)), torch.as_tensor(emb)], dim=1)
            mu, log_std = module.distribution_from_obs(obs)
        else:
            mu, log_std = module.distribution(torch.arange(len(run.prompts)))
    shape = (len(prompts), *run.latent_shape)
    return mu.reshape(shape), log_std.exp().reshape(shape)


def summarize(result: dict, prompts: list[str], iteration: int, seconds: float, batch: int, evals_per_prompt: int) -> dict:
    from find_rl import keys

    f = result["learners"]["default_policy"][keys.FIND]
    return {
        "iteration": iteration,
        "reward_mean": float(f[keys.REWARD_MEAN]),
        "alignment": float(f.get(keys.ALIGNMENT, math.nan)),
        "alignment_per_prompt": {p: float(f[keys.alignment_of(p)]) for p in prompts if keys.alignment_of(p) in f},
        "clip_fraction": float(f[keys.CLIP_FRACTION]),
        "approx_kl": float(f[keys.APPROX_KL]),
        "calibration_pred_mean": float(f[keys.CALIB_PRED_MEAN]),
        "mu_abs_mean": float(f[keys.MU_ABS]),
        "std_mean": float(f[keys.STD_MEAN]),
        "samples_invalid": int(f[keys.SAMPLES_INVALID]),
        "samples": int(f[keys.SAMPLES]),  # samples the learner trained on this iteration
        "seconds": seconds,
        "images_per_s": batch / seconds,
        "reward_evals_per_prompt": evals_per_prompt,
    }


def format_row(row: dict, total: int, prompts: list[str]) -> str:
    per = " ".join(f"p{i}={row['alignment_per_prompt'].get(p, math.nan):.2f}" for i, p in enumerate(prompts))
    return (f"iter {row['iteration']:>3}/{total}  reward {row['reward_mean']:.3f}  align {row['alignment']:.3f} [{per}]  "
            f"clip {row['clip_fraction']:.2f}  kl {row['approx_kl']:.4f}  |mu| {row['mu_abs_mean']:.2f}  "
            f"std {row['std_mean']:.2f}  {row['images_per_s']:.0f} img/s")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    try:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
        if args.resume is not None:  # the run's own settings; only the total number of iterations is new
            saved = args.resume / RUN_FILE
            if not saved.is_file():
                raise ValueError(f"--resume {args.resume}: no {RUN_FILE} there; point it at a folder written by find_rl.train")
            resume, total = args.resume, args.iterations
            args = parser.parse_args(json.loads(saved.read_text())["argv"])
            args.resume, args.iterations = resume, total
        run, find = settings_from_args(args)
        run_dir = prepare_run_dir(args, argv)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return train(args, run, find, run_dir)


def train(args: argparse.Namespace, run: RunSettings, find: FindSettings, run_dir: Path) -> int:
    import ray

    from find_rl.config import find_ppo_config

    address = args.address or os.environ.get("RAY_ADDRESS")
    started_ray = not ray.is_initialized()
    if started_ray:
        if address:
            try:
                check_address(address)
            except ValueError as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
            ray.init(address=address, log_to_driver=False)
        else:
            # enough logical CPUs that every requested actor starts (a pending env runner would sit idle); the
            # physical cores still bound the work, and one-thread actors share them
            cpus = max(os.cpu_count() or 1, run.num_env_runners + run.num_reward_workers + 1)
            ray.init(address="local", num_cpus=cpus, include_dashboard=args.dashboard, dashboard_host="127.0.0.1",
                     dashboard_port=args.dashboard_port, log_to_driver=False)
    scorers = start_scorers(run)
    algo = find_ppo_config(run, find).build_algo()
    try:  # every way out stops what this run started: the algorithm, its reward workers, its own Ray
        history = run_iterations(args, run, algo, run_dir)
        if history is None:
            return 2
        mean, std = final_distributions(algo, run)
    finally:
        algo.stop()
        if scorers is not None:
            scorers.kill()
        if started_ray:
            ray.shutdown()
    finish(args, run, find, run_dir, mean, std, history)
    print((run_dir / "results.md").read_text() if (run_dir / "results.md").is_file() else "")
    return 0


def run_iterations(args: argparse.Namespace, run: RunSettings, algo, run_dir: Path) -> list[dict] | None:
    """Restore (with ``--resume``) and train up to ``args.iterations``; the progress rows, or None after an error line."""
    from find_rl.checkpoints import latest_checkpoint, save_checkpoint
    from find_rl.metrics import RunMetrics

    progress = run_dir / PROGRESS_FILE
    done = 0
    if args.resume is not None:
        ckpt = latest_checkpoint(run_dir)
        try:
            algo.restore_from_path(str(ckpt.resolve()))
        except Exception as e:  # RLlib raises many types for unreadable or foreign state
            print(f"error: checkpoint {ckpt} is corrupt or was written by another configuration "
                  f"({e.__class__.__name__}); delete it to resume from the one before, or start anew with --out", file=sys.stderr)
            return None
        done = algo.iteration
        logger.info("resumed %s at iteration %d of %d", ckpt, done, args.iterations)
    history = restore_progress(progress, done)
    prompts = run.prompts
    logger.info("prompts: %s", ", ".join(f"p{i}={p!r}" for i, p in enumerate(prompts)))
    logger.info("batch: %d prompts x %d samples x %d runner(s) per iteration; latent %s; clip_param %s",
                len(prompts), run.samples_per_prompt, run.runners, run.latent_shape, run.clip_param)
    live = RunMetrics(run_dir.resolve().name)  # Ray metrics: Prometheus endpoint and the dashboard
    for it in range(done, args.iterations):
        row = train_iteration(algo, run, it)
        live.update(row)
        history.append(row)
        append_progress(progress, row)
        print(format_row(row, args.iterations, prompts), flush=True)
        invalid = row["samples_invalid"] / max(row["samples"] + row["samples_invalid"], 1)
        if invalid > args.max_invalid_fraction:  # invalid samples were skipped; this many means the reward is broken
            save_checkpoint(algo, run_dir, it + 1)
            print(f"error: {invalid:.0%} of iteration {it + 1}'s rewards were NaN/inf (limit {args.max_invalid_fraction:.0%}, "
                  f"--max-invalid-fraction); fix the reward, then --resume {run_dir}", file=sys.stderr)
            return None
        if (it + 1) % args.checkpoint_every == 0 or it + 1 == args.iterations:
            save_checkpoint(algo, run_dir, it + 1)
    return history


def finish(args, run: RunSettings, find: FindSettings, run_dir: Path, mean, std, history: list[dict]) -> list[dict]:
    """Export the learned distributions and write the report (fresh samples, never the training batches).

    Returns the per-prompt result rows (:func:`find_rl.report.results_rows`; empty when not evaluated)."""
    from find_rl.evaluate import evaluate_distributions
    from find_rl.export import NoisePolicy, save_policy
    from find_rl.report import image_grid, plot_curves, results_rows, write_results
    from find_rl.sampler import DiffusionSampler, SamplerSettings

    settings = SamplerSettings(num_inference_steps=run.num_inference_steps, guidance_scale=run.guidance_scale, eta=run.eta,
                               device=run.device, dtype=run.dtype, num_frames=run.num_frames)
    training = {"iterations": args.iterations, "seed": run.seed, "reward": run.reward, "clip_param": run.clip_param,
                "reward_evals_per_prompt": args.iterations * run.samples_per_prompt_per_iteration,
                "run": {k: v for k, v in asdict(run).items() if k != "prompts"}, "find": find.to_dict()}
    prompts = list(run.prompts) + list(run.eval_prompts)  # held-out prompts (amortised policy) come last
    save_policy(run_dir, NoisePolicy(prompts=prompts, mean=mean, std=std, model=run.model, sampler=settings.to_dict(),
                                     training=training))
    logger.info("exported %s/noise_policy.safetensors", run_dir)
    if history:
        plot_curves(history, run.prompts, run_dir / "curve.png")
    if args.eval_samples <= 0 or run.model != "shapes":
        return []
    sampler = DiffusionSampler.from_pretrained(run.model, settings)
    seed = 10_000 + run.seed  # fresh noise, never the training stream
    base = evaluate_distributions(prompts=prompts, samples=args.eval_samples, seed=seed, sampler=sampler, return_images=16)
    after = evaluate_distributions(prompts=prompts, mean=mean, std=std, samples=args.eval_samples, seed=seed,
                                   sampler=sampler, return_images=16)
    for p in prompts:
        image_grid({"base": base[p]["images"], "FIND": after[p]["images"]}, run_dir / f"grid_{p.replace(' ', '_')}.png")
    rows = results_rows(base, after, held_out=run.eval_prompts)
    header = (f"FIND ({run.policy_type} policy) on {run.model}: {args.iterations} iterations, {training['reward_evals_per_prompt']} "
              f"reward evaluations per trained prompt, seed {run.seed}; scored on {args.eval_samples} fresh samples per prompt "
              "(detector IoU >= 0.7; strict 0.8)")
    write_results(rows, run_dir, header=header)
    return rows


if __name__ == "__main__":
    sys.exit(main())
