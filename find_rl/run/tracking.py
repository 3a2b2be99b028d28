"""Watching a run while it trains, the way Ray users do: TensorBoard events in the run folder and, when asked,
Weights & Biases and MLflow, all written by Ray's own logger callbacks (nothing here writes a file itself).

- One run that Tune does not drive (``train``, a comparison method): :class:`RunLog` drives Ray Tune's
  ``TBXLoggerCallback`` (tensorboardX) and, with ``--wandb`` / ``--mlflow``, ``WandbLoggerCallback`` /
  ``MLflowLoggerCallback`` from ``ray.air.integrations``, through :class:`RunTrial`, the few attributes of a Tune
  ``Trial`` those callbacks read. Every iteration's scalars go to each callback; image grids (a ``(3, H, W)`` uint8
  array per prompt, which ``TBXLoggerCallback`` writes as an image) go to TensorBoard only.
- The Tune sweep: :func:`callbacks` for Tune's ``RunConfig``; its trials report the same scalars and Tune writes
  them per trial, with the swept values as TensorBoard hyperparameters.
- :func:`check`: a one-line error before Ray starts when ``--wandb`` / ``--mlflow`` lacks its package, or W&B has
  no credentials and is not offline.

Keys: ``TBXLoggerCallback`` prefixes every key with ``ray/tune/``, as for any Tune trial (``ray/tune/alignment``,
``ray/tune/prompt_alignment/a_green_circle``, ``ray/tune/images/a_green_circle``: prompts spelt by :func:`metric_name`); W&B
and MLflow record the same keys unprefixed. MLflow's default store is a file store in the run folder
(``OUT/mlruns``); W&B writes ``OUT/wandb``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import uuid
from numbers import Real
from pathlib import Path

import numpy as np

from find_rl.core import keys
from find_rl.core.progress import FindProgress
from find_rl.core.settings import RunSettings, TrackingSettings

#: the extras that install each optional package (pyproject.toml)
EXTRAS = {"wandb": ("wandb", "wandb"), "mlflow": ("mlflow", "mlflow")}
#: every TensorBoard image key starts with this
IMAGES = "images"


# ---------------------------------------------------------------------------------------------------- checks
def check(tracking: TrackingSettings) -> None:
    """A one-line ``ValueError`` for a sink that cannot work (run before Ray starts)."""
    for flag, (module, extra) in EXTRAS.items():
        if getattr(tracking, flag) and importlib.util.find_spec(module) is None:
            raise ValueError(f"--{flag} needs the {module} package, which is not installed: pip install 'find_rl[{extra}]'")
    if tracking.wandb and os.environ.get("WANDB_MODE", "").lower() not in ("offline", "dryrun", "disabled"):
        import wandb

        try:  # no prompt without a terminal; the logging actor could not ask
            wandb.login(relogin=False, verify=False)
        except Exception as e:  # wandb raises its UsageError (and others) when no key is configured
            first = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
            raise ValueError(f"--wandb: {first.rstrip('.')}; run `wandb login`, set WANDB_API_KEY, or log offline with "
                             "WANDB_MODE=offline") from None


# ---------------------------------------------------------------------------------------------------- what is logged
def metric_name(key: str) -> str:
    """The key as every sink spells it (TensorBoard's tag characters, which MLflow accepts too: letters, digits,
    ``_ - . /``); anything else becomes ``_``. Per-prompt alignment ``alignment/<p>`` becomes
    ``prompt_alignment/<p>`` (``alignment/a green circle`` -> ``prompt_alignment/a_green_circle``): MLflow's file store
    keeps a metric as a file, so ``alignment`` and ``alignment/<p>`` cannot both exist there."""
    if key.startswith(keys.alignment_of("")):
        key = "prompt_alignment/" + key[len(keys.alignment_of("")):]
    return re.sub(r"[^A-Za-z0-9_\-./]", "_", key)


def find_scalars(learner: dict, row: FindProgress) -> dict[str, float]:
    """One FIND iteration's scalars: every learner metric of :mod:`find_rl.core.keys` (training alignment, overall and per
    prompt; reward; the calibration: prediction, calibrated reward, advantage mean and std, g's fit; clip fraction;
    approximate KL per element; the anchor regulariser; ratio, entropy, |mu|, sigma; sample counts) and the
    iteration's time, images per second and reward evaluations per prompt so far."""
    out = {metric_name(k): float(v) for k, v in learner.items() if isinstance(v, Real)}
    return out | {keys.ITERATION_S: float(row.seconds), keys.IMAGES_PER_S: float(row.images_per_s),
                  keys.REWARD_EVALS: float(row.reward_evals_per_prompt)}


def run_hparams(run: RunSettings) -> dict:
    """What TensorBoard's HParams tab shows for a run."""
    return {"clip_param": run.find.clip_param, "lr": run.find.lr, "num_epochs": run.find.num_epochs,
            "baseline": run.find.baseline, "policy_type": run.policy.policy_type,
            "samples_per_prompt": run.samples_per_prompt, "seed": run.loop.seed}


def history_scalars(row: dict) -> dict[str, float]:
    """A baseline's history row (CEM, the paper's loop, DDPO): its numbers, per-prompt alignment as ``prompt_alignment/<p>``."""
    out = {metric_name(k): float(v) for k, v in row.items() if isinstance(v, Real) and k != "iteration"}
    return out | {metric_name(keys.alignment_of(p)): float(v) for p, v in row.get("alignment_per_prompt", {}).items()}


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Images in [-1, 1] (the sampler's) -> uint8 in [0, 255], same shape."""
    return ((np.asarray(images, dtype=np.float32).clip(-1, 1) + 1) * 127.5).round().astype(np.uint8)


def image_row(images: np.ndarray, *, pad: int = 2) -> np.ndarray:
    """``(K, 3, H, W)`` uint8 images (videos ``(K, F, 3, H, W)``: their first frame) -> one ``(3, H, K W + pads)`` uint8
    row, white between the images: what ``TBXLoggerCallback`` writes as one image."""
    u8 = np.asarray(images)
    if u8.dtype != np.uint8:
        raise ValueError(f"image_row takes uint8 images (to_uint8), got {u8.dtype}")
    if u8.ndim == 5:
        u8 = u8[:, 0]
    k, c, h, w = u8.shape
    row = np.full((c, h, k * (w + pad) - pad), 255, np.uint8)
    for i in range(k):
        row[:, :, i * (w + pad): i * (w + pad) + w] = u8[i]
    return row


# ---------------------------------------------------------------------------------------------------- Ray's callbacks
def callbacks(tracking: TrackingSettings, out: Path) -> list:
    """Ray's logger callbacks for these settings: TensorBoard (``TBXLoggerCallback``), W&B and MLflow when asked; W&B
    and MLflow files go under ``out``."""
    from ray.tune.logger import TBXLoggerCallback

    out = Path(out).resolve()
    found = []
    if tracking.tensorboard:
        found.append(TBXLoggerCallback())
    if tracking.wandb:
        from ray.air.integrations.wandb import WandbLoggerCallback

        kwargs = {"dir": str(out)}  # wandb.init(dir=...): OUT/wandb/, not the current folder
        if os.environ.get("WANDB_MODE"):  # Ray's logging actor may not inherit the driver's environment
            kwargs["mode"] = os.environ["WANDB_MODE"]
        found.append(WandbLoggerCallback(project=tracking.project, **kwargs))
    if tracking.mlflow:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        uri = tracking.mlflow_tracking_uri or (out / "mlruns").as_uri()
        if uri.startswith("file:") or "://" not in uri:
            # MLflow 3 refuses its file store unless told it is wanted (a local store needs no server)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        found.append(MLflowLoggerCallback(tracking_uri=uri, experiment_name=tracking.project))
    return found


class RunTrial:
    """What Ray's logger callbacks read from a Tune ``Trial``, for one run Tune does not drive: ``TBXLoggerCallback``
    (``init_local_path``, ``local_path``, ``evaluated_params``), ``WandbLoggerCallback`` (``config``, ``trial_id``,
    ``experiment_dir_name``, ``str(trial)``, ``checkpoint``), ``MLflowLoggerCallback`` (``config``, ``str(trial)``).
    Hashed by identity, as a ``Trial``."""

    checkpoint = None  # (W&B's checkpoint upload, off, reads it)

    def __init__(self, run_dir: Path, *, config: dict, hparams: dict):
        run_dir = Path(run_dir).resolve()
        self.local_path = str(run_dir)
        self.trial_name = run_dir.name
        self.trial_id = uuid.uuid4().hex[:12]  # a new W&B / MLflow run per process (a resumed run gets its own)
        self.experiment_dir_name = run_dir.parent.name
        self.config = config
        self.evaluated_params = hparams

    def init_local_path(self) -> None:
        Path(self.local_path).mkdir(parents=True, exist_ok=True)

    def __str__(self) -> str:
        return self.trial_name


class RunLog:
    """Ray's logger callbacks for one run (:func:`callbacks`), opened on construction; ``close()`` (or ``with``) ends
    them. ``scalars=False``: image grids only (a Tune trial, whose scalars Tune itself logs)."""

    def __init__(self, run_dir: Path, tracking: TrackingSettings, *, config: dict | None = None, hparams: dict | None = None,
                 scalars: bool = True):
        self.trial = RunTrial(run_dir, config=dict(config or {}), hparams=dict(hparams or {}))
        self.scalars = scalars
        # (a Tune trial: TensorBoard images only; Tune logs its scalars, to W&B and MLflow too)
        self.callbacks = callbacks(tracking if scalars else TrackingSettings(tensorboard=tracking.tensorboard), run_dir)
        for cb in self.callbacks:
            cb.setup()
            cb.log_trial_start(self.trial)

    def __enter__(self) -> "RunLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close(failed=exc[0] is not None)

    def log(self, iteration: int, scalars: dict[str, float], images: dict[str, np.ndarray] | None = None) -> None:
        """One iteration: ``scalars`` to every callback, ``images`` (``{prompt: (3, H, W) uint8}``) to TensorBoard."""
        from ray.tune.logger import TBXLoggerCallback
        from ray.tune.result import TRAINING_ITERATION

        if not (self.scalars or images):
            return
        result = {TRAINING_ITERATION: iteration, **(scalars if self.scalars else {})}
        pictures = {IMAGES: {metric_name(p): im for p, im in images.items()}} if images else {}
        for cb in self.callbacks:
            tbx = isinstance(cb, TBXLoggerCallback)
            if tbx or self.scalars:
                cb.log_trial_result(iteration, self.trial, result | pictures if tbx else result)

    def log_row(self, row: dict) -> None:
        """A baseline's history row (:func:`history_scalars`)."""
        self.log(int(row["iteration"]), history_scalars(row))

    def close(self, *, failed: bool = False) -> None:
        callbacks_, self.callbacks = self.callbacks, []
        for cb in callbacks_:
            cb.log_trial_end(self.trial, failed=failed)
            cb.on_experiment_end(trials=[self.trial])  # W&B: wait for its logging actor to finish
