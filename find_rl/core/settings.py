"""Typed settings of a FIND run, in parts. Every setting is declared once (default, flag, help, check: see
:mod:`find_rl.core.fields`); the commands' flags are generated from these declarations.

Parts (each validates itself on construction; :meth:`RunSettings.validate` adds the checks that span parts):

- :class:`SamplerSettings`: how the frozen model renders (also part of an exported policy's metadata);
- :class:`ResourceSettings`: where the work runs (env runners, reward workers, GPUs, threads, the Ray cluster);
- :class:`PolicySettings`: the noise-policy family and its parametrisation;
- :class:`FindSettings`: FIND's optimisation: RLlib's PPO knobs under their RLlib names (``lr``, ``clip_param``,
  ``num_epochs``) plus the surrogate, the anchor and the reward baseline (calibration);
- :class:`LoopSettings`: the run's loop (iterations, seed, checkpoints, final report);
- :class:`TrackingSettings`: where a run can be watched while it trains (TensorBoard events, W&B, MLflow);
- :class:`RunSettings`: what to train (model, reward, prompts, samples per prompt) and the parts above.

A saved run (``run.json``) holds :meth:`RunSettings.to_dict`; :meth:`RunSettings.from_dict` refuses unknown keys.
No Ray and no torch here, so ``--help`` and validation stay fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass

from find_rl.core.fields import (at_least, check_fields, check_only, finite, finite_nonnegative, finite_positive, from_dict,
                                 in_range, one_of, positive, setting)
from find_rl.objectives.mass_covering import OBJECTIVES

#: what a prompt-conditioned policy reads of the text encoder (find_rl.core.observation builds them)
TEXT_FEATURES = ("pooled", "tokens")

DTYPE_NAMES = ("float32", "float16", "bfloat16")
#: the embedded worlds (:mod:`find_rl.worlds`, one folder each): ``--world``, and each one's model and reward alias
WORLD_NAMES = ("shapes", "scenes")
#: each world's exact scorer as a reward, ``--reward WORLD`` + one of these: the shaped reward (1 when aligned,
#: partial credit below), ``-strict`` (the same for the strict verdict), ``-binary`` (1 when aligned, else 0: no
#: partial credit, which can rank a sure near miss above a chance of success; bench/RESULTS.md, "Partial credit's plateau")
WORLD_REWARD_SUFFIXES = ("", "-strict", "-binary")
#: the noise policy's default learning rate per world. shapes: lr 0.1 with a binding clip (bench/RESULTS.md, "Defaults
#: that use the clip": the clip stops ~20% of samples per update and keeps lr 0.1 stable). scenes: at 0.1 Adam's
#: normalised steps follow the noise of 32 samples per prompt on a 6-clause reward and the mean drifts off the model's
#: aligned region (seed 0: 0.19 -> 0.00); at 0.02 it learns (bench/RESULTS.md, "The scenes world")
WORLD_LR = {"shapes": 0.1, "scenes": 0.02}
POLICY_TYPES = ("per-prompt", "amortized", "flow", "mixture")
#: ``--recipe``: what a run trains when no policy family is named. ``paper``: FIND's Gaussian per prompt on the world's
#: (shaped) reward. ``seeded``: the seeded mixture (SEEDED_POLICY: 32 components placed on aligned draws of the frozen
#: model after a quarter of the run, then FIND) on the world's binary reward; on the scenes default rare set it
#: reaches FIND's alignment and more with the frozen model's factor diversity kept (bench/RESULTS.md, "The seeded
#: mixture"), at ~2.4x the time of an iteration (32 full-resolution components).
RECIPES = ("paper", "seeded")
WORLD_RECIPE = {"shapes": "paper", "scenes": "seeded"}
SEEDED_POLICY = {"policy_type": "mixture", "mean_resolution": None, "mixture_components": 32, "mixture_seed_share": 0.25}
#: ``--scheduler``: the sampler the frozen model runs (both deterministic at eta 0, so the image is a function of the noise)
SCHEDULERS = ("ddim", "unipc", "keep")
#: The sampler a ``SamplerSettings`` choice left at None resolves to (``SamplerSettings.resolved``): the world's own where
#: ``WORLD_SAMPLER`` names one, else these. The scenes model's: UniPC, 15 steps, classifier-free guidance 3 on the first
#: 4 steps (``int(0.3 x 15)``) rescaled by 0.7 -- its common prompts 0.77 -> 0.87 and rare 0.20 -> 0.34 for 19 UNet
#: evaluations per image instead of DDIM's 10 (bench/RESULTS.md, "The scenes model's sampler").
SAMPLER_DEFAULTS = {"scheduler": "ddim", "num_inference_steps": 10, "guidance_scale": 1.0, "guidance_rescale": 0.0,
                    "guidance_stop": 1.0}
WORLD_SAMPLER = {"shapes": {}, "scenes": {"scheduler": "unipc", "num_inference_steps": 15, "guidance_scale": 3.0,
                                          "guidance_rescale": 0.7, "guidance_stop": 0.3}}


def world_default_text(name: str) -> str:
    """How a sampler flag's help states its default: ``the world's; scenes 15, else 10``."""
    worlds = ", ".join(f"{w} {v[name]}" for w, v in WORLD_SAMPLER.items() if name in v)
    return f"default: the world's; {worlds}, else {SAMPLER_DEFAULTS[name]}"


#: what a record saved before a sampler key existed meant by its absence (guidance on every step, not rescaled)
SAMPLER_SAVED_DEFAULTS = {"guidance_rescale": 0.0, "guidance_stop": 1.0}
#: ``only=`` of the settings that belong to some policy families (any other family refuses them in one line)
PER_PROMPT, AMORTIZED, FLOW, MIXTURE = ("per-prompt",), ("amortized",), ("flow",), ("mixture",)
GAUSSIAN = ("per-prompt", "amortized", "mixture")
FAMILY_HINT = "--policy-type {owner}"
BASELINES = ("calibrated", "mean", "ema", "none")


def parse_clip(text: str) -> float:
    """``--clip-param`` text: a number, or inf/none/off for no clipping (stored as ``math.inf``)."""
    if str(text).lower() in ("inf", "none", "off"):
        return math.inf
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--clip-param must be a number or 'inf', got {text!r}") from None


def parse_resolution(text: str) -> int | None:
    if str(text) == "full":
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"--mean-resolution must be a whole number or 'full', got {text!r}") from None


def parse_resources(specs: list[str]) -> dict[str, float]:
    out = {}
    for spec in specs:
        name, eq, amount = spec.partition("=")
        try:
            value = float(amount)
        except ValueError:
            value = math.nan
        if not eq or not name.strip() or not value > 0:
            raise ValueError(f"--env-runner-resources {spec!r}: write NAME=AMOUNT with AMOUNT > 0, e.g. sampler=1")
        out[name.strip()] = value
    return out


def _eval_samples(v: int) -> str | None:
    return None if v == 0 or v >= 2 else "0 (no final report) or >= 2 (diversity compares pairs)"


def _above_one(v: float) -> str | None:
    return None if math.isfinite(v) and v > 1 else "a finite number > 1"


def check_prompts(prompts: list, flag: str = "--prompts") -> None:
    """Prompts are non-empty strings, each once (the env checks its own list with this too)."""
    if any(not isinstance(p, str) or not p.strip() for p in prompts):
        raise ValueError(f"{flag} got an empty prompt; pass non-empty prompts like 'a green circle'")
    if len(set(prompts)) != len(prompts):
        raise ValueError(f"{flag} lists a prompt twice; each prompt gets one distribution")


class _Part:
    def __post_init__(self):
        check_fields(self)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SamplerSettings(_Part):
    """How the frozen model renders. Part of an exported policy's metadata."""

    # The five sampler choices below default to None: the world's (WORLD_SAMPLER), else SAMPLER_DEFAULTS (resolved()).
    num_inference_steps: int | None = setting(None, check=at_least(1), cli={"type": int},
                                              help=f"denoising steps of the frozen model ({world_default_text('num_inference_steps')})")
    guidance_scale: float | None = setting(None, check=finite, cli={"type": float},
                                           help=f"classifier-free guidance scale ({world_default_text('guidance_scale')})")
    guidance_rescale: float | None = setting(None, check=in_range(0, 1), cli={"type": float},
                                             help="guidance rescale phi (Lin et al. 2024; diffusers' guidance_rescale): the "
                                                  "guided prediction's spread pulled back toward the text prediction's, 0: "
                                                  f"off ({world_default_text('guidance_rescale')})")
    guidance_stop: float | None = setting(None, check=in_range(0, 1), cli={"type": float},
                                          help="guide only the first int(stop x steps) steps (diffusers' ClassifierFreeGuidance "
                                               "stop; the embedded worlds' pipelines), 1: every step "
                                               f"({world_default_text('guidance_stop')})")
    eta: float = setting(0.0, check=in_range(0, 1), help="DDIM eta (0 = deterministic; > 0 makes the reward noisy)")
    device: str = setting("cpu", help="device of the frozen model in each env runner")
    dtype: str = setting("float32", check=one_of(*DTYPE_NAMES), cli={"choices": DTYPE_NAMES},
                         help="dtype of the frozen model and reward models (float16/bfloat16 on GPU)")
    scheduler: str | None = setting(None, check=one_of(*SCHEDULERS), cli={"choices": SCHEDULERS},
                                    help="'ddim': swap the pipeline's scheduler for DDIM; 'unipc': for UniPC (multistep, "
                                         "deterministic, better at few steps); 'keep': the checkpoint's own "
                                         f"({world_default_text('scheduler')})")
    compile_unet: bool = setting(False, cli={"action": "store_true"},
                                 help="torch.compile + channels_last for the denoiser (GPU fast path)")
    num_frames: int | None = setting(None, check=at_least(1), cli={"type": int},
                                     help="video pipelines: frames per clip (default: the pipeline's)")

    def __post_init__(self):
        super().__post_init__()
        if self.eta > 0 and self.scheduler == "unipc":
            raise ValueError(f"--eta {self.eta}: UniPC is deterministic and takes no eta; use --scheduler ddim for eta > 0")

    @classmethod
    def from_saved(cls, saved: dict, **overrides) -> "SamplerSettings":
        """Settings read back from a record (an exported policy's ``sampler``, a run's ``run.json``): a key the record
        predates means what it meant then (``SAMPLER_SAVED_DEFAULTS``)."""
        return cls(**(SAMPLER_SAVED_DEFAULTS | dict(saved) | overrides))

    def resolved(self, world: str | None = None) -> "SamplerSettings":
        """Every choice left at None filled in: the world's sampler (``WORLD_SAMPLER``), else ``SAMPLER_DEFAULTS``."""
        fill = SAMPLER_DEFAULTS | WORLD_SAMPLER.get(world, {})
        missing = {k: v for k, v in fill.items() if getattr(self, k) is None}
        return dataclasses.replace(self, **missing) if missing else self


@dataclass
class ResourceSettings(_Part):
    num_env_runners: int = setting(0, check=at_least(0), help="env-runner actors (0: sample in this process)")
    num_gpus_per_env_runner: float = setting(0.0, check=finite_nonnegative, help="fractional: several runners share a GPU")
    env_runner_resources: dict = setting(factory=dict, parse=parse_resources, cli={"nargs": "+", "metavar": "NAME=AMOUNT"},
                                         help="custom Ray resources each env runner needs (pins runners to node types, e.g. sampler=1)")
    num_gpus_per_learner: float = setting(0.0, flag="", check=finite_nonnegative)
    num_reward_workers: int = setting(0, check=at_least(0), aliases=("--num-scorers",),
                                      help="reward-scorer actors shared by the env runners (0: score inside each env runner)")
    num_gpus_per_reward_worker: float = setting(0.0, check=finite_nonnegative, aliases=("--num-gpus-per-scorer",),
                                                help="GPU share of each scorer actor (fractional ok)")
    threads: int = setting(2, check=at_least(1), help="torch CPU threads in this process")
    address: str | None = setting(None, help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    dashboard: bool = setting(False, cli={"action": "store_true"},
                              help="start the Ray dashboard (bound to 127.0.0.1) for a local Ray")
    dashboard_port: int = setting(8265, check=in_range(1, 65535))


@dataclass
class PolicySettings(_Part):
    policy_type: str = setting("per-prompt", check=one_of(*POLICY_TYPES), cli={"choices": POLICY_TYPES},
                               help="'per-prompt': a Gaussian per prompt (the paper's family); 'amortized': one Gaussian "
                                    "mu, sigma = f(text embedding) for all prompts; 'flow': a coupling flow per prompt; "
                                    "'mixture': K Gaussians per prompt, equal fixed weights or learned ones (find_rl/policies/mixture.py)")
    mean_resolution: int | None = setting(4, parse=parse_resolution, check=at_least(1),
                                          help="spatial resolution of what is learned: the Gaussian's mean (upsampled), the "
                                               "flow's block-mean view (the rest stays N(0, I)); or 'full'")
    mean_upsampling: str = setting("bilinear", check=one_of("bilinear", "nearest"), cli={"choices": ("bilinear", "nearest")},
                                   help="per-prompt only: how the low-resolution mean reaches the latent; 'nearest' gives "
                                        "block-constant moves like the flow's shift (a control for the flow's gain)", only=PER_PROMPT)
    mean_highpass: int | None = setting(None, check=at_least(1), cli={"type": int},
                                        help="remove the learned mean's k x k block averages", only=PER_PROMPT)
    std_mode: str = setting("scalar", check=one_of("scalar", "element"), cli={"choices": ("scalar", "element")}, only=PER_PROMPT)
    learn_std: bool = setting(False, cli={"action": argparse.BooleanOptionalAction}, help="learn sigma (default: sigma = 1)", only=GAUSSIAN)
    min_std: float = setting(0.5, check=finite_positive, help="floor of the policy's std", only=GAUSSIAN)
    amortized_hidden: int = setting(64, check=at_least(0),
                                    help="amortized only: hidden units of an MLP path beside the linear one (0: mu linear in the embedding)", only=AMORTIZED)
    amortized_rank: int = setting(0, check=at_least(0),
                                  help="amortized only: rank of a channel x space path, mu[c, x] = sum_r u_r(e)[c] v_r(e)[x] (0: none)", only=AMORTIZED)
    amortized_linear: bool = setting(True, cli={"action": argparse.BooleanOptionalAction},
                                     help="amortized only: keep the path linear in the embedding", only=AMORTIZED)
    text_features: str = setting("pooled", check=one_of(*TEXT_FEATURES), cli={"choices": TEXT_FEATURES},
                                 help="amortized only: what the policy reads of the frozen text encoder: its pooled "
                                      "embedding, or its token states read by attention", only=AMORTIZED)
    flow_coupling: str = setting("affine", check=one_of("affine", "spline"), cli={"choices": ("affine", "spline")},
                                 help="flow only: affine (RealNVP) or rational-quadratic spline couplings", only=FLOW)
    flow_blocks: int = setting(4, check=at_least(0), help="flow only: coupling blocks (alternating checkerboard/channel masks)", only=FLOW)
    flow_hidden: int = setting(32, check=at_least(1), help="flow only: channels of each coupling's conv net", only=FLOW)
    flow_conditioning: str = setting("prompt", check=one_of("prompt", "embedding"), cli={"choices": ("prompt", "embedding")},
                                     help="flow only: a learned vector per prompt, or the text embedding (answers held-out prompts)", only=FLOW)
    mixture_components: int = setting(4, check=at_least(1),
                                      help="mixture only: K, the Gaussians per prompt", only=MIXTURE)
    mixture_init: float = setting(0.5, check=finite_nonnegative,
                                  help="mixture only: how far (per element of the mean) the components start from 0, in "
                                       "symmetric pairs (equal components never separate)", only=MIXTURE)
    mixture_weight_floor: float | None = setting(None, check=in_range(0, 1), cli={"type": float},
                                                 help="mixture only: learn the weights, each kept at or above this share "
                                                      "(below 1/K); default: equal, fixed weights", only=MIXTURE)
    mixture_seed_share: float = setting(0.0, check=in_range(0, 1),
                                        help="mixture only: the share of --iterations (and of the reward evaluations) "
                                             "spent drawing N(0, I), after which the K components are placed on K of "
                                             "the draws the reward called aligned (at least one iteration; needs "
                                             "--mean-resolution full; a prompt with none stays at N(0, I)); 0: no seeding",
                                        only=MIXTURE)
    mixture_width: float = setting(0.1, check=in_range(0, 1, open_low=True),
                                   help="mixture only, with --mixture-seed-share: h, each seeded component is "
                                        "N(sqrt(1 - h^2) z_k, h^2 I) around its aligned noise z_k (sigma h; below "
                                        "--min-std too)", only=MIXTURE)
    flow_coupling_lr_scale: float = setting(0.002, check=finite_positive,
                                            help="flow only: the coupling nets' learning rate as a fraction of --lr (the "
                                                 "per-prompt shift and scale train at --lr)", only=FLOW)

    def __post_init__(self):
        super().__post_init__()
        self.check_family()
        floor = self.mixture_weight_floor
        if floor is not None and floor * self.mixture_components >= 1:
            raise ValueError(f"--mixture-weight-floor must be below 1/K = {1 / self.mixture_components:g} "
                             f"(K = --mixture-components {self.mixture_components}), got {floor:g}")
        if self.mixture_seed_share and self.mean_resolution is not None:
            raise ValueError("--mixture-seed-share places the components on whole aligned noises; add "
                             f"--mean-resolution full (got {self.mean_resolution})")
        if not (self.amortized_linear or self.amortized_hidden or self.amortized_rank):
            raise ValueError("--no-amortized-linear needs --amortized-hidden > 0 or --amortized-rank > 0: the mean needs one path")

    def check_family(self, given: frozenset[str] | set[str] = frozenset()) -> None:
        """Refuse a setting of another family than ``policy_type`` (given as a flag, or not at its default)."""
        check_only(self, self.policy_type, what="policy", given=given, hint=FAMILY_HINT)


@dataclass
class FindSettings(_Part):
    """FIND's optimisation settings; they reach the learner inside :class:`find_rl.rllib.config.FindPPOConfig`."""

    # None: the world's (WORLD_LR)
    lr: float | None = setting(None, check=finite_positive, cli={"type": float},
                               help="learning rate of the noise policy (default: the world's, shapes 0.1, scenes 0.02)")
    clip_param: float = setting(0.005, parse=parse_clip, check=positive,
                                help="PPO ratio clip on the per-element ratio (~ -ln(1 - clip) nats of KL per element per "
                                     "update); 'inf' = none")
    num_epochs: int = setting(4, check=at_least(1), help="passes over each batch")
    minibatches_per_epoch: int = setting(1, check=at_least(1))
    surrogate: str = setting("ppo", check=one_of("ppo", "clamp"), cli={"choices": ("ppo", "clamp")},
                             help="'clamp' = the released code's clamp-only loss")
    anchor: str = setting("kl", check=one_of("kl", "l2", "none"), cli={"choices": ("kl", "l2", "none")},
                          help="regulariser toward N(0, I)", only=GAUSSIAN)
    anchor_coeff: float = setting(0.0, check=finite_nonnegative,
                                  help="Gaussian families: anchor weight (initial weight if --target-alignment)", only=GAUSSIAN)
    prior_kl_coeff: float = setting(0.01, flag="--kl-coeff", check=finite_nonnegative,
                                    help="flow only: beta, the weight of the true reverse KL(q || N(0, I)) per latent element "
                                         "(named apart from RLlib's adaptive-KL kl_coeff, which FIND leaves off)", only=FLOW)
    replay_coeff: float = setting(0.0, check=finite_nonnegative,
                                  help="flow only: weight of importance-weighted maximum likelihood on replayed rewarded "
                                       "noises (mass-covering; find_rl/objectives/replay.py); 0: off", only=FLOW)
    replay_size: int = setting(256, check=at_least(1), help="flow only: rewarded noises kept per prompt for the replay", only=FLOW)
    objective: str = setting("ppo", check=one_of(*OBJECTIVES), cli={"choices": OBJECTIVES},
                             help="'ppo': FIND's clipped surrogate (+ its regulariser); 'log-variance' (off-policy trajectory balance) "
                                  "or 'iw-mle' (importance-weighted maximum likelihood), both fitting q* ∝ N(0, I) exp(r / beta) "
                                  "from a behaviour with a prior share, on the family's exact log-density "
                                  "(find_rl/objectives/mass_covering.py)")
    beta: float = setting(0.1, check=finite_positive,
                          help="log-variance / iw-mle: the temperature of the target q* ∝ N(0, I) exp(r / beta)")
    beta_final: float | None = setting(None, check=finite_positive, cli={"type": float},
                                       help="log-variance / iw-mle: anneal beta geometrically from --beta to this over "
                                            "--iterations (None: beta stays constant; a run resumed with other "
                                            "--iterations follows the new span from where it stands)")
    prior_share: float | None = setting(None, check=in_range(0, 1), cli={"type": float},
                                        help="share of fresh N(0, I) draws in each batch (behaviour "
                                             "(1 - share) q + share N(0, I), its exact density recorded); default 0.2 for "
                                             "log-variance / iw-mle, 0 for ppo")
    render_replay: int = setting(0, check=at_least(0),
                                 help="log-variance / iw-mle: past renders (aligned and failed) kept per prompt and added "
                                      "to every loss; 0: none")
    target_alignment: float | None = setting(None, check=in_range(0, 1, open_low=True), cli={"type": float},
                                             help="adapt each prompt's anchor weight to hold its training alignment at this level", only=GAUSSIAN)
    anchor_factor: float = setting(1.5, flag="", check=_above_one,
                                   help="multiplicative adaptation of the adaptive anchor weight per iteration", only=GAUSSIAN)
    # the batch mean: at equal budget it matched or beat g at 32 samples per prompt and beat it on every seed at 2 and 4
    # (bench/RESULTS.md, "The baseline ladder"); "calibrated" is the paper's g
    baseline: str = setting("mean", check=one_of(*BASELINES), cli={"choices": BASELINES},
                            extra_flags=(("--no-calibration", {"action": "store_const", "const": "none",
                                                                "help": "ablation: train on raw rewards (= --baseline none)"}),),
                            help="what is subtracted from each reward: the prompt's batch mean, g(mu, sigma, c) (calibrated: "
                                 "the paper's dynamic reward calibration), a running per-prompt mean (ema), or nothing")
    ema_momentum: float = setting(0.9, check=in_range(0, 0.999),
                                  help="--baseline ema: weight of the running mean's past (0: the previous batch's mean)")
    calibration_normalize: str = setting("prompt", check=one_of("prompt", "batch", "none"),
                                         cli={"choices": ("prompt", "batch", "none")},
                                         help="divide the calibrated reward by the per-prompt or batch reward std")
    calibration_lr: float = setting(1e-2, flag="", check=finite_positive)
    calibration_steps: int = setting(50, flag="", check=at_least(0))
    calibration_history: int = setting(4, flag="", check=at_least(1))
    calibration_hidden: int = setting(64, flag="", check=at_least(1))

    def __post_init__(self):
        super().__post_init__()
        if self.target_alignment is not None and self.anchor == "none":
            raise ValueError("--target-alignment adapts the anchor weight; choose --anchor kl or l2, not none")
        if self.beta_final is not None and not self.mass_covering:
            raise ValueError("--beta-final anneals the mass-covering objectives' beta; add --objective log-variance or iw-mle")

    @property
    def mass_covering(self) -> bool:
        return self.objective != "ppo"

    @property
    def behaviour_prior_share(self) -> float:
        """``prior_share`` resolved: 0.2 for the mass-covering objectives (about the share of prior draws that
        outsourced diffusion sampling mixes in), 0 for PPO, unless given."""
        if self.prior_share is not None:
            return float(self.prior_share)
        return 0.2 if self.mass_covering else 0.0

    @property
    def clip(self) -> float | None:
        """``clip_param`` as the policy math takes it: None for no clipping."""
        return None if math.isinf(self.clip_param) else self.clip_param


@dataclass
class LoopSettings(_Part):
    iterations: int = setting(80, check=at_least(1), help="total iterations of the run (a resumed run counts from 0)")
    seed: int = setting(0)
    checkpoint_every: int = setting(10, check=at_least(1), help="iterations between checkpoints")
    max_invalid_fraction: float = setting(0.25, check=in_range(0, 1),
                                          help="stop (after a checkpoint) when more than this fraction of an iteration's "
                                               "rewards are NaN/inf")
    eval_samples: int = setting(256, check=_eval_samples, help="fresh samples per prompt for the final report (0: skip)")
    eval_set_samples: int = setting(32, check=at_least(2),
                                    help="a run over more prompts than it draws per iteration: fresh samples per prompt "
                                         "of the world's evaluation set in the final report")


@dataclass
class TrackingSettings(_Part):
    """Where a run can be watched while it trains, all through Ray's own logger callbacks (:mod:`find_rl.run.tracking`)."""

    tensorboard: bool = setting(True, cli={"action": argparse.BooleanOptionalAction},
                                help="TensorBoard events in the run folder (tensorboard --logdir OUT)")
    image_every: int = setting(10, check=at_least(0),
                               help="iterations between TensorBoard image grids of each prompt (0: no images)")
    wandb: bool = setting(False, cli={"action": "store_true"},
                          help="also log to Weights & Biases (pip install 'find_rl[wandb]'; WANDB_MODE=offline: local only)")
    project: str = setting("find_rl", help="the W&B project and MLflow experiment runs are logged to")
    mlflow: bool = setting(False, cli={"action": "store_true"},
                           help="also log to MLflow (pip install 'find_rl[mlflow]')")
    mlflow_tracking_uri: str | None = setting(None, help="MLflow tracking URI (default: a file store in OUT/mlruns)")


#: older names of settings, still read from saved runs and accepted by :meth:`RunSettings.replace` (method names such as
#: ``find+policy_type=flow+kl_coeff=0.005`` keep working)
RENAMED = {"kl_coeff": "prior_kl_coeff"}

PARTS = {"sampler": SamplerSettings, "resources": ResourceSettings, "policy": PolicySettings, "find": FindSettings,
         "loop": LoopSettings, "tracking": TrackingSettings}


@dataclass
class RunSettings(_Part):
    """One FIND run. Defaults = the embedded shapes world (its rare prompts are filled in by :func:`find_rl.run.find_run.resolve`)."""

    world: str = setting("shapes", check=one_of(*WORLD_NAMES), cli={"choices": WORLD_NAMES},
                         help="the embedded world: its model, its exact scorer (the default reward) and its default "
                              "prompts; 'shapes' (9 prompts, 16x16, fast) or 'scenes' (GenEval's six categories, 32x32)")
    model: str | None = setting(None, help="a diffusers pipeline folder or a hub id (default: the world's own model)")
    recipe: str | None = setting(None, check=one_of(*RECIPES), cli={"choices": RECIPES},
                                 help="what the defaults train: 'paper' (FIND's Gaussian per prompt, the world's reward) or "
                                      "'seeded' (a mixture of 32 Gaussians placed on the frozen model's aligned draws, "
                                      "then FIND; the world's binary reward); default: the world's (shapes paper, scenes "
                                      "seeded), or paper when a --policy-type is named")
    reward: list = setting(factory=list, cli={"action": "append", "metavar": "NAME[=PATH][:WEIGHT]"},
                           help="reward (repeat for a weighted sum; default: the world's exact scorer): shapes, "
                                "shapes-strict, shapes-binary, scenes, scenes-strict, scenes-binary, clip=PATH, pickscore=PATH, aesthetic=PATH, "
                                "xclip=PATH (video), imagereward=FOLDER, hpsv2=FOLDER")
    prompts: list = setting(factory=list, cli={"nargs": "+"},
                            help="prompts to train (default: the world's rare prompts the frozen model fails)")
    eval_prompts: list = setting(factory=list, cli={"nargs": "+"},
                                 help="amortized only: held-out prompts (never trained on) to export and score next to the trained ones")
    samples_per_prompt: int = setting(32, check=at_least(2), help="images per prompt per iteration (per env runner)")
    prompts_per_iteration: int = setting(32, check=at_least(1),
                                         help="prompts each env runner draws afresh every iteration when there are more "
                                              "(each drawn prompt gets --samples-per-prompt images); all of them otherwise")
    train_prompts: int | None = setting(None, check=at_least(1), cli={"type": int},
                                        help="prompt-conditioned policies: train on the first N of the world's training "
                                             "prompts (a fixed shuffled order; default: all of them)")
    latent_shape: tuple | None = setting(None, flag="", help="read from the model by find_rl.run.find_run.resolve")
    token_shape: tuple | None = setting(None, flag="", help="(T, H) of the text encoder's token states, read from the "
                                                             "model by resolve when the policy reads them")
    sampler: SamplerSettings = setting(factory=SamplerSettings, flag="")
    resources: ResourceSettings = setting(factory=ResourceSettings, flag="")
    policy: PolicySettings = setting(factory=PolicySettings, flag="")
    find: FindSettings = setting(factory=FindSettings, flag="")
    loop: LoopSettings = setting(factory=LoopSettings, flag="")
    tracking: TrackingSettings = setting(factory=TrackingSettings, flag="")

    def __post_init__(self):
        if isinstance(self.reward, str):
            self.reward = [self.reward]
        self.latent_shape = tuple(self.latent_shape) if self.latent_shape is not None else None
        self.token_shape = tuple(self.token_shape) if self.token_shape is not None else None
        super().__post_init__()
        if self.model is None:  # the world's own model and exact scorer unless others are named
            self.model = self.world
        self._apply_recipe()
        if not self.reward:
            self.reward = [self.world + ("-binary" if self.recipe == "seeded" else "")]
        if self.find.lr is None:
            self.find = dataclasses.replace(self.find, lr=WORLD_LR[self.world])
        self.sampler = self.sampler.resolved(self.world)
        other = next((w for w in WORLD_NAMES if w != self.world and (self.model == w or any(
            r.split(":")[0] in (w + x for x in WORLD_REWARD_SUFFIXES) for r in self.reward))), None)
        if other is not None:
            raise ValueError(f"--model / --reward name the {other} world while --world is {self.world}; "
                             f"add --world {other}, or drop --model / --reward")
        check_prompts(self.prompts)
        check_prompts(self.eval_prompts, "--eval-prompts")
        if set(self.eval_prompts) & set(self.prompts):
            raise ValueError(f"--eval-prompts must be held out: {sorted(set(self.eval_prompts) & set(self.prompts))} are also trained")
        self.check_family()
        if self.eval_prompts and not self.answers_any_prompt:
            raise ValueError("--eval-prompts (held-out prompts) needs --policy-type amortized (or flow with --flow-conditioning "
                             "embedding): a per-prompt policy has nothing for them")
        if self.train_prompts is not None and not self.answers_any_prompt:
            raise ValueError("--train-prompts picks training prompts for a prompt-conditioned policy; add --policy-type "
                             "amortized (or flow with --flow-conditioning embedding), or drop it")

    def _apply_recipe(self) -> None:
        """``recipe`` None: the world's (``WORLD_RECIPE``) when the policy settings are all at their defaults, else
        ``paper`` (the command line also says ``paper`` when a --policy-type is named). ``seeded`` fills each policy
        setting left at its default from ``SEEDED_POLICY`` (idempotent: a resolved run's settings pass through
        unchanged; ``--recipe seeded --policy-type mixture --mixture-components 16`` keeps its 16)."""
        default = PolicySettings()
        if self.recipe is None:
            self.recipe = WORLD_RECIPE.get(self.world, "paper") if self.policy == default else "paper"
        if self.recipe == "seeded":
            if self.policy.policy_type not in (default.policy_type, "mixture"):
                raise ValueError(f"--recipe seeded trains a mixture; drop --policy-type {self.policy.policy_type} or pass "
                                 "--recipe paper")
            fill = {k: v for k, v in SEEDED_POLICY.items() if getattr(self.policy, k) == getattr(default, k)}
            self.policy = dataclasses.replace(self.policy, **fill)

    @property
    def answers_any_prompt(self) -> bool:
        """Whether the policy is a function of the prompt's text (amortised, or the flow conditioned on the embedding)."""
        return self.policy.policy_type == "amortized" or (self.policy.policy_type == "flow"
                                                          and self.policy.flow_conditioning == "embedding")

    def check_family(self, given: frozenset[str] | set[str] = frozenset()) -> None:
        """Refuse a policy or optimisation setting of another family than the chosen one: one line naming the flag.
        ``given``: the settings named on the command line (:func:`find_rl.core.fields.given_names`), refused even at
        their default value (``--kl-coeff 0.01`` with the Gaussian family)."""
        self.policy.check_family(given)
        check_only(self.find, self.policy.policy_type, what="policy", given=given, hint=FAMILY_HINT)

    def validate(self) -> None:
        """The checks that need the resolved prompts and latent shape (see :func:`find_rl.run.find_run.resolve`)."""
        if not self.prompts:
            raise ValueError("no prompts given; pass --prompts 'a green circle' ... or a --prompts-file")
        if self.latent_shape is None:
            raise ValueError("latent_shape is unknown; resolve the settings against the model first (find_rl.run.find_run.resolve)")
        if self.batch_size % self.find.minibatches_per_epoch:
            raise ValueError(f"--minibatches-per-epoch {self.find.minibatches_per_epoch} must divide the batch of "
                             f"{self.batch_size} samples")
        shape, pol = self.latent_shape, self.policy
        if pol.mean_highpass is not None and len(shape) != 3:
            raise ValueError(f"--mean-highpass works on image latents (C, H, W), not {shape}; drop --mean-highpass")
        if pol.mean_highpass is not None and any(n % pol.mean_highpass for n in shape[1:]):
            raise ValueError(f"--mean-highpass must be a block size that divides the latent's {tuple(shape[1:])}, got {pol.mean_highpass}")
        if pol.mean_resolution is not None and not pol.mean_resolution <= min(shape[1:]):
            raise ValueError(f"--mean-resolution must be in [1, {min(shape[1:])}] or 'full', got {pol.mean_resolution}")

    # ------------------------------------------------------------------------------------------------ derived sizes
    @property
    def prompts_drawn(self) -> int:
        """Prompts per env runner per iteration: all of them, or ``prompts_per_iteration`` drawn afresh."""
        return min(len(self.prompts), self.prompts_per_iteration)

    @property
    def draws_prompts(self) -> bool:
        """Whether each iteration draws a subset of the prompts (more prompts than ``prompts_per_iteration``)."""
        return len(self.prompts) > self.prompts_per_iteration

    @property
    def batch_size(self) -> int:
        """Samples (episodes) per env runner per iteration: every drawn prompt gets ``samples_per_prompt``."""
        return self.prompts_drawn * self.samples_per_prompt

    @property
    def runners(self) -> int:
        """Processes that sample: the env-runner actors, or the driver when there are none."""
        return max(self.resources.num_env_runners, 1)

    @property
    def samples_per_prompt_per_iteration(self) -> int | float:
        """Reward evaluations each prompt gets per iteration, over all runners (on average when prompts are drawn)."""
        if self.draws_prompts:
            return self.samples_per_prompt * self.runners * self.prompts_drawn / len(self.prompts)
        return self.samples_per_prompt * self.runners

    @property
    def reward_spec(self) -> str | list[str]:
        """The reward spec(s) as the reward registry and the exported metadata take them."""
        return self.reward[0] if len(self.reward) == 1 else list(self.reward)

    def env_config(self) -> dict:
        """The keyword arguments of the noise bandit env (:mod:`find_rl.envs.noise_bandit`)."""
        threads = self.resources.threads if self.resources.num_env_runners == 0 else 1
        return dict(world=self.world, model=self.model, prompts=list(self.prompts), reward=self.reward_spec, sampler=self.sampler.to_dict(),
                    num_reward_workers=self.resources.num_reward_workers, torch_threads=threads, seed=self.loop.seed,
                    prompts_per_iteration=self.prompts_per_iteration, text_features=self.text_features)

    @property
    def text_features(self) -> str:
        """What the observation carries of the text (``pooled`` unless the amortised policy reads tokens)."""
        return self.policy.text_features

    # ------------------------------------------------------------------------------------------------ copies and files
    def replace(self, **changes) -> "RunSettings":
        """A copy with some settings changed, named flat (``run.replace(clip_param=0.01, seed=1)``): each name goes to
        the part that declares it; an unknown name is an error."""
        own = {f.name for f in dataclasses.fields(self)} - set(PARTS)
        parts = {name: {} for name in PARTS}
        top = {}
        for key, value in changes.items():
            key = RENAMED.get(key, key)
            owner = next((name for name, cls in PARTS.items() if key in {f.name for f in dataclasses.fields(cls)}), None)
            if key in own:
                top[key] = value
            elif owner is not None:
                parts[owner][key] = value
            else:
                raise ValueError(f"unknown setting {key!r}")
        new_parts = {name: dataclasses.replace(getattr(self, name), **kw) if kw else getattr(self, name) for name, kw in parts.items()}
        return dataclasses.replace(self, **top, **new_parts)

    @classmethod
    def from_dict(cls, d: dict) -> "RunSettings":
        """Read :meth:`to_dict`'s output back; unknown keys (top level or in a part) are an error."""
        d = dict(d) if isinstance(d, dict) else d
        if isinstance(d, dict):
            for name, part in PARTS.items():
                if name in d:
                    saved = {RENAMED.get(k, k): v for k, v in d[name].items()} if isinstance(d[name], dict) else d[name]
                    if name == "sampler" and isinstance(saved, dict):  # as SamplerSettings.from_saved
                        saved = SAMPLER_SAVED_DEFAULTS | saved
                    d[name] = from_dict(part, saved, where=f"saved settings [{name}]")
        return from_dict(cls, d, where="saved settings")
