"""One FIND run, as a library: every command that trains FIND (``train``, ``tune``'s trials, the comparison) goes here.

1. :func:`resolve`: settings -> settings ready to run (prompts filled in and checked against the world, reward specs
   parsed, the device checked, the latent shape read from the model, every cross-part check). Nothing starts Ray.
2. :class:`FindRun` (a context manager, inside :func:`find_rl.rllib.ray_session.ray_session`): builds the reward workers and
   the RLlib algorithm from :func:`find_rl.rllib.config.find_ppo_config`, restores a checkpoint, runs iterations
   (:meth:`FindRun.iterations` yields one :class:`~find_rl.core.progress.FindProgress` per iteration and keeps
   ``progress.jsonl`` and the checkpoints), logs each iteration through Ray's logger callbacks
   (:mod:`find_rl.run.tracking`: TensorBoard events in the run folder with image grids every ``--image-every``
   iterations; W&B, MLflow), and returns the learned distributions; it stops everything it built.
3. The run folder: :func:`prepare_run_dir` (a new run or one to resume; ``run.json`` holds the settings).

Seeding: iteration ``it`` of a run seeds every env runner's stream from ``(seed, it)``, so a resumed run draws exactly
the noise an uninterrupted one would.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from find_rl.core import keys
from find_rl.core.progress import PROGRESS_FILE, FindProgress, append_progress, restore_progress
from find_rl.core.settings import RunSettings

logger = logging.getLogger("find_rl.run.find_run")
RUN_FILE = "run.json"
PREVIEW_SAMPLES = 4  # images per prompt in each TensorBoard grid
PREVIEW_PROMPTS = 16  # the first this many trained prompts get a grid (a run over a world's many prompts: a sample)
PREVIEW_SEED = 30_000  # + the run's seed: the grids' base noise, the same at every grid (not a training or scoring stream)


class InvalidRewards(RuntimeError):
    """More of an iteration's rewards were NaN/inf than ``--max-invalid-fraction`` allows (a checkpoint was saved)."""


# ---------------------------------------------------------------------------------------------------- 1. settings
def read_prompts_file(path: Path) -> list[str]:
    if not path.is_file():
        raise ValueError(f"prompts file {path} does not exist")
    prompts = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    if not prompts:
        raise ValueError(f"prompts file {path} holds no prompts; write one prompt per line")
    return prompts


def _resolved(run: RunSettings) -> bool:
    """Settings that went through :func:`resolve` before (a resumed run's): their prompts are already the list."""
    return run.latent_shape is not None


def resolve(run: RunSettings, *, prompts_file: Path | None = None) -> RunSettings:
    """The settings ready to run (see the module docstring); a one-line ``ValueError`` for anything wrong."""
    from find_rl.rewards.registry import RewardSpec
    from find_rl.diffusion.sampler import DiffusionSampler, SamplerSettings, check_device
    from find_rl.run.tracking import check as check_tracking
    from find_rl.worlds import world_of_model

    world = world_of_model(run.model)  # None for a foreign model (SD 1.5, ...): no default prompts, no prompt check
    given = prompts_file is not None or bool(run.prompts)
    prompts = read_prompts_file(prompts_file) if prompts_file is not None else [p.strip() for p in run.prompts]
    if given and run.train_prompts is not None and not _resolved(run):
        raise ValueError("--train-prompts takes the first N of the world's training prompts; drop --prompts / "
                         "--prompts-file, or drop --train-prompts and list the prompts yourself")
    if not prompts and world is not None and run.answers_any_prompt:  # one policy for many prompts
        prompts = world.policy_training_prompts()
        if run.train_prompts is not None:
            if run.train_prompts > len(prompts):
                raise ValueError(f"--train-prompts {run.train_prompts}: the {world.name} world has {len(prompts)} "
                                 f"training prompts; pass at most {len(prompts)}")
            prompts = prompts[: run.train_prompts]
    elif not prompts and world is not None:
        prompts = world.default_prompts()
    if run.train_prompts is not None and world is None:
        raise ValueError("--train-prompts picks from an embedded world's training prompts; this model has none: "
                         "pass --prompts")
    run = run.replace(prompts=prompts, eval_prompts=[p.strip() for p in run.eval_prompts])
    if world is not None:
        for p in run.prompts + run.eval_prompts:
            world.check_prompt(p)
    for spec in run.reward:
        RewardSpec.parse(spec)  # names and forms checked here; the env runners load the reward models
    check_tracking(run.tracking)  # --wandb / --mlflow: the package is there, W&B has credentials or is offline
    # the device is checked here unless env runners sample on a cluster's other nodes (which may hold GPUs we lack)
    if run.resources.num_env_runners == 0 or not (run.resources.address or os.environ.get("RAY_ADDRESS")):
        check_device(run.sampler.device)
    # also checks that the model loads and fits (frames included for video pipelines)
    sampler = DiffusionSampler.from_pretrained(run.model, SamplerSettings(num_frames=run.sampler.num_frames))
    run = run.replace(latent_shape=tuple(sampler.latent_shape))
    if run.text_features == "tokens":
        from find_rl.core.observation import token_shape

        run = run.replace(token_shape=token_shape(sampler.pipeline))
    run.validate()
    return run


# ---------------------------------------------------------------------------------------------------- 3. the folder
def prepare_run_dir(out: Path, run: RunSettings, *, resume: bool = False, argv: list[str] | None = None) -> Path:
    """Check the folder (a new run, or one to resume) and record the run's settings in ``run.json``."""
    from find_rl.core.checkpoints import latest_checkpoint

    if resume:
        if latest_checkpoint(out) is None:
            raise ValueError(f"--resume {out}: no complete checkpoint in {out}/checkpoints; start a new run with --out")
        return out
    if (out / RUN_FILE).exists() and latest_checkpoint(out) is not None:
        raise ValueError(f"{out} already holds a run; use --resume {out} to continue it, or choose another --out")
    # (a run.json without any checkpoint is a run that died before its first checkpoint: start it afresh)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"cannot write to output folder {out} ({e.strerror}); choose a writable --out") from None
    (out / RUN_FILE).write_text(json.dumps({"argv": argv or [], "settings": run.to_dict()}, indent=2))
    return out


def load_run_settings(run_dir: Path) -> RunSettings | list[str]:
    """The settings a run folder was started with (``run.json``; unknown keys are an error), or, for a folder written
    before settings were saved, the command-line arguments it was started with."""
    path = run_dir / RUN_FILE
    if not path.is_file():
        raise ValueError(f"--resume {run_dir}: no {RUN_FILE} there; point it at a folder written by find_rl.train")
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is corrupt ({e.msg}); start anew with --out") from None
    if "settings" not in saved:
        return list(saved.get("argv", []))
    return RunSettings.from_dict(saved["settings"])


# ---------------------------------------------------------------------------------------------------- 2. the run
def iteration_seed(seed: int, iteration: int) -> int:
    """The RNG seed of one iteration: a run resumed at iteration k draws exactly the noise an uninterrupted run would."""
    return (seed * 1_000_003 + iteration) % (2**31 - 1)


def _seed_env_runner(env_runner, *, seed: int, iteration: int) -> None:
    """Seed one env runner's exploration RNG (torch draws the noise); each runner gets its own stream.

    A runner that has sampled before starts each ``sample()`` with a reset step (NEXT_STEP autoreset) whose action
    draw, B x D normals, is discarded; a runner built fresh (a resumed run, a restarted actor) starts with a plain
    reset and no such draw. From iteration 1 on, a fresh runner makes that draw itself, so that a resumed run
    samples exactly the noise an uninterrupted run would; from a behaviour mixture (``prior_share`` > 0, the
    mass-covering objectives) the draw includes the mixture's own (which rows are fresh N(0, I) draws, and those draws).
    """
    import numpy as np
    import torch

    from find_rl.objectives.mass_covering import mix_in_prior

    s = (seed + 7919 * int(getattr(env_runner, "worker_index", 0))) % (2**31 - 1)
    torch.manual_seed(s)
    np.random.seed(s)
    # (the driver's local runner has no env when remote runners sample: it never draws)
    if iteration > 0 and getattr(env_runner, "env", None) is not None and getattr(env_runner, "_needs_initial_reset", False):
        space = env_runner.env.single_action_space
        z = torch.normal(torch.zeros(env_runner.num_envs, *space.shape), torch.ones(env_runner.num_envs, *space.shape))
        mix_in_prior(z, float(getattr(getattr(env_runner, "module", None), "prior_share", 0.0)))


def _render_preview(env_runner, *, noise: np.ndarray, prompt_idx: np.ndarray) -> np.ndarray:
    """On the env runner that samples: ``noise`` rendered by its env's frozen pipeline, as uint8 for the trip back."""
    from find_rl.run.tracking import to_uint8

    return to_uint8(env_runner.env.unwrapped.render_noise(noise, prompt_idx))


def start_scorers(run: RunSettings):
    """The reward-scorer actor pool the env runners will connect to (``None`` when scoring in-process)."""
    res = run.resources
    if res.num_reward_workers < 1:
        return None
    from find_rl.rewards.scorers import ScorerPool

    gpu = res.num_gpus_per_reward_worker > 0  # a scorer without a GPU share scores on its CPU, in float32
    return ScorerPool.create(run.reward_spec, res.num_reward_workers, device="cuda" if gpu else "cpu",
                             dtype=run.sampler.dtype if gpu else "float32", num_gpus=res.num_gpus_per_reward_worker)


class FindRun:
    """The RLlib algorithm of one run and what it started (scorer actors, Ray's logger callbacks); ``with FindRun(...)
    as r:`` stops them all. ``log_scalars=False``: the logger callbacks get image grids only (a Tune trial, whose
    scalars Tune logs)."""

    def __init__(self, run: RunSettings, run_dir: Path, *, live_metrics: bool = True, log_scalars: bool = True):
        from find_rl.rllib.config import find_ppo_config
        from find_rl.run.tracking import RunLog, run_hparams

        self.run, self.run_dir = run, Path(run_dir)
        self.algo = self.log = None
        self.scorers = start_scorers(run)
        try:
            # the run folder is the algorithm's log folder: nothing lands in ~/ray_results
            self.algo = find_ppo_config(run).run_folder(self.run_dir.resolve()).build_algo()
            # opened at the first logged iteration, so a resume refused at its checkpoint writes nothing in the folder
            self._open_log = lambda: RunLog(self.run_dir, run.tracking, config=run.to_dict(), hparams=run_hparams(run),
                                            scalars=log_scalars)
        except BaseException:
            self.stop()
            raise
        self.learner_metrics: dict = {}  # the last iteration's learner metrics (result["learners"][...]["find"])
        self._obs = None
        self.history: list[FindProgress] = []
        self.live = None
        if live_metrics:
            from find_rl.rllib.metrics import RunMetrics

            self.live = RunMetrics(self.run_dir.resolve().name)  # Ray metrics: Prometheus endpoint and the dashboard

    def __enter__(self) -> "FindRun":
        return self

    def __exit__(self, *exc) -> None:
        self.stop(failed=exc[0] is not None)

    def stop(self, *, failed: bool = False) -> None:
        if self.log is not None:
            self.log.close(failed=failed)
            self.log = None
        if self.algo is not None:
            self.algo.stop()
            self.algo = None
        self._stop_scorers()

    def _stop_scorers(self) -> None:
        if self.scorers is not None:
            self.scorers.kill()
            self.scorers = None

    @property
    def iteration(self) -> int:
        return int(self.algo.iteration)

    def restore(self, checkpoint: Path | str | None = None) -> int:
        """Restore ``checkpoint`` (default: the run folder's newest) and the progress rows it covers; the iteration."""
        from find_rl.core.checkpoints import latest_checkpoint

        ckpt = Path(checkpoint) if checkpoint is not None else latest_checkpoint(self.run_dir)
        try:
            self.algo.restore_from_path(str(ckpt.resolve()))
        except Exception as e:  # RLlib raises many types for unreadable or foreign state
            raise ValueError(f"checkpoint {ckpt} is corrupt or was written by another configuration ({e.__class__.__name__}); "
                             "delete it to resume from the one before, or start anew with --out") from None
        self.history = restore_progress(self.run_dir / PROGRESS_FILE, self.iteration)
        return self.iteration

    def train_iteration(self, it: int) -> FindProgress:
        """Iteration ``it`` (0-based): seed every env runner's stream for it, ``algo.train()``, the progress row."""
        run = self.run
        t0 = time.perf_counter()
        self.algo.env_runner_group.foreach_env_runner(
            functools.partial(_seed_env_runner, seed=iteration_seed(run.loop.seed, it), iteration=it), local_env_runner=True)
        result = self.algo.train()
        self.learner_metrics = dict(result["learners"]["default_policy"][keys.FIND])
        return FindProgress.from_result(result, run.prompts, iteration=it + 1, seconds=time.perf_counter() - t0,
                                        images=run.batch_size * run.runners,
                                        evals_per_prompt=(it + 1) * run.samples_per_prompt_per_iteration)

    def scalars(self, row: FindProgress) -> dict[str, float]:
        """The iteration's scalars for the logger callbacks and Tune (:func:`find_rl.run.tracking.find_scalars`)."""
        from find_rl.run.tracking import find_scalars

        return find_scalars(self.learner_metrics, row)

    def preview(self, samples: int = PREVIEW_SAMPLES) -> dict[str, np.ndarray]:
        """``{prompt: (3, H, samples W) uint8}``: ``samples`` images per trained prompt (the first ``PREVIEW_PROMPTS``) from the current policy, the same
        base noise at every call, rendered by the frozen pipeline of the env runner that samples (``{}`` while no env
        runner is healthy)."""
        import torch

        from find_rl.run.tracking import image_row

        run, prompts = self.run, list(self.run.prompts)[:PREVIEW_PROMPTS]
        eps = torch.randn((len(prompts), samples, *run.latent_shape),
                          generator=torch.Generator().manual_seed(PREVIEW_SEED + run.loop.seed))
        noise = self.policy().transform(list(range(len(prompts))), eps).reshape(len(prompts) * samples, -1)
        render = functools.partial(_render_preview, noise=noise.float().numpy(),
                                   prompt_idx=np.repeat(np.arange(len(prompts)), samples))
        group = self.algo.env_runner_group
        if run.resources.num_env_runners == 0:  # the driver samples itself
            out = group.foreach_env_runner(render, local_env_runner=True)
        else:  # one remote runner renders (the driver's local runner has no env)
            ids = group.healthy_worker_ids()[:1]
            out = group.foreach_env_runner(render, local_env_runner=False, remote_worker_ids=ids) if ids else []
        if not out:
            return {}
        images = out[0].reshape(len(prompts), samples, *out[0].shape[1:])
        return {p: image_row(images[i]) for i, p in enumerate(prompts)}

    def iterations(self, until: int | None = None, *, checkpoints: bool = True):
        """Train from the current iteration up to ``until`` (default: the settings' iterations), yielding each row after
        it is logged and saved (``progress.jsonl``; the logger callbacks, with image grids every ``image_every``
        iterations and at the end; a checkpoint every ``checkpoint_every`` and at the end).
        Raises :class:`InvalidRewards` (after a checkpoint) when an iteration's rewards are too often NaN/inf."""
        from find_rl.core.checkpoints import save_checkpoint

        loop, tracking = self.run.loop, self.run.tracking
        until = loop.iterations if until is None else until
        progress = self.run_dir / PROGRESS_FILE
        if self.iteration == 0:
            self.history = restore_progress(progress, 0)
        for it in range(self.iteration, until):
            row = self.train_iteration(it)
            self.history.append(row)
            append_progress(progress, row)
            if self.live is not None:
                self.live.update(row.to_dict())
            grids = tracking.tensorboard and tracking.image_every > 0 and (row.iteration % tracking.image_every == 0
                                                                            or row.iteration == until)
            if self.log is None:
                self.log = self._open_log()
            self.log.log(row.iteration, self.scalars(row), self.preview() if grids else None)
            if row.invalid_fraction > loop.max_invalid_fraction:  # invalid samples were skipped; this many: the reward is broken
                save_checkpoint(self.algo, self.run_dir, it + 1)
                raise InvalidRewards(f"{row.invalid_fraction:.0%} of iteration {it + 1}'s rewards were NaN/inf (limit "
                                     f"{loop.max_invalid_fraction:.0%}, --max-invalid-fraction); fix the reward, then "
                                     f"--resume {self.run_dir}")
            if checkpoints and ((it + 1) % loop.checkpoint_every == 0 or it + 1 == until):
                save_checkpoint(self.algo, self.run_dir, it + 1)
            yield row

    def policy(self):
        """The learned policy in the portable form (:mod:`find_rl.policies.export`): the trained prompts, then ``eval_prompts``
        (held-out prompts, which only prompt-conditioned policies answer, from their text embeddings)."""
        from find_rl.run.artifacts import training_record

        run, prompts = self.run, list(self.run.prompts) + list(self.run.eval_prompts)
        meta = dict(prompts=prompts, model=run.model, sampler=run.sampler.to_dict(), training=training_record(run))
        return self.algo.get_module().export(self._observations(), **meta)

    def _observations(self):
        """Observation rows of the trained prompts, then the held-out ones (their one-hot all zeros); computed once.
        The text embeddings are computed (loading the model's text encoder) only for a module that reads them."""
        import torch

        from find_rl.core.observation import ObservationLayout, text_features
        from find_rl.diffusion.models import load_pipeline

        if self._obs is None:
            run, module = self.run, self.algo.get_module()
            prompts = list(run.prompts) + list(run.eval_prompts)
            layout = ObservationLayout(len(run.prompts))
            if module.reads_embedding:
                emb = text_features(load_pipeline(run.model), prompts, run.text_features)
            else:  # the one-hot is all it reads: zeros where the embedding goes
                emb = torch.zeros(len(prompts), module.observation_space.shape[0] - len(run.prompts))
            self._obs = layout.rows(emb, list(range(len(run.prompts))))
        return self._obs

