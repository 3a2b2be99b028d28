"""Typed, validated settings: ``RunSettings`` (what to train, how to sample) and ``FindSettings`` (FIND's own
hyperparameters beyond RLlib's PPO ones). No Ray import here, so ``--help`` and validation stay fast.

They travel to the Learner inside ``config.learners(learner_config_dict=...)`` as a plain dict.
RLlib's names are kept for RLlib's knobs (``clip_param``, ``lr``, ``num_epochs``, ``minibatch_size``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields


@dataclass
class FindSettings:
    prompts: list[str] = field(default_factory=list)  # the env's prompt list (metric names, exports)
    surrogate: str = "ppo"  # "ppo": min(unclipped, clipped); "clamp": the released code's clamp-only loss
    anchor: str = "kl"  # pull toward N(0, I): "kl" (analytic Gaussian KL), "l2" (the paper's stand-in), "none"
    anchor_coeff: float = 0.0  # weight of the anchor term (per-element mean); initial weight when adaptive
    target_alignment: float | None = None  # if set: per-prompt adaptive anchor weight (find_rl/anchor.py)
    anchor_factor: float = 1.5  # multiplicative adaptation of the adaptive anchor weight per iteration
    calibration: bool = True  # dynamic reward calibration r - g(mu, sigma, c); False = ablation
    calibration_normalize: str = "prompt"  # divide r* by the per-prompt ("prompt") or batch std, or "none"
    calibration_lr: float = 1e-2
    calibration_steps: int = 50
    calibration_history: int = 4
    calibration_hidden: int = 64

    def __post_init__(self):
        if self.surrogate not in ("ppo", "clamp"):
            raise ValueError(f"surrogate must be 'ppo' or 'clamp', got {self.surrogate!r}")
        if self.anchor not in ("kl", "l2", "none"):
            raise ValueError(f"anchor must be 'kl', 'l2' or 'none', got {self.anchor!r}")
        if not (math.isfinite(self.anchor_coeff) and self.anchor_coeff >= 0):
            raise ValueError(f"anchor_coeff must be a finite number >= 0, got {self.anchor_coeff}")
        if self.target_alignment is not None and not 0.0 < self.target_alignment <= 1.0:
            raise ValueError(f"target_alignment must be in (0, 1], got {self.target_alignment}")
        if self.target_alignment is not None and self.anchor == "none":
            raise ValueError("target_alignment adapts the anchor weight; choose --anchor kl or l2, not none")
        if self.calibration_steps < 0 or self.calibration_history < 1:
            raise ValueError("calibration_steps must be >= 0 and calibration_history >= 1")
        if not (math.isfinite(self.calibration_lr) and self.calibration_lr > 0) or self.calibration_hidden < 1:
            raise ValueError(f"calibration_lr must be a finite number > 0 and calibration_hidden >= 1, got {self.calibration_lr}, "
                             f"{self.calibration_hidden}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FindSettings":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class RunSettings:
    """Everything one FIND run needs besides :class:`FindSettings`. Defaults = the embedded shapes world."""

    model: str = "shapes"
    reward: str | list[str] = "shapes"  # NAME[=PATH][:WEIGHT] spec(s), see find_rl.rewards
    prompts: list[str] = field(default_factory=list)
    latent_shape: tuple[int, ...] = (3, 16, 16)
    samples_per_prompt: int = 32  # images per prompt per iteration (per env runner)
    num_env_runners: int = 0  # 0: sample in the driver process (fastest on a small CPU box)
    num_gpus_per_env_runner: float = 0.0
    env_runner_resources: dict = field(default_factory=dict)  # custom Ray resources per env runner, e.g. {"sampler": 1}
    num_gpus_per_learner: float = 0.0
    num_reward_workers: int = 0  # reward-scorer actors (find_rl.scorers); 0 = score inside each env runner
    num_gpus_per_reward_worker: float = 0.0
    device: str = "cpu"
    dtype: str = "float32"  # of the frozen model (and reward models): float32, float16, bfloat16
    compile_unet: bool = False  # torch.compile + channels_last for the denoiser (GPU fast path)
    num_frames: int | None = None  # video pipelines: frames per clip (None: the pipeline's default)
    num_inference_steps: int = 10
    guidance_scale: float = 1.0
    eta: float = 0.0
    torch_threads: int | None = None
    lr: float = 0.05
    clip_param: float | None = 0.2  # None / inf: no clipping (ablation)
    num_epochs: int = 4
    minibatches_per_epoch: int = 1
    mean_resolution: int | None = 4
    mean_highpass: int | None = None  # remove the mean's k x k block averages (steer without moving the layout)
    std_mode: str = "scalar"
    policy_type: str = "per-prompt"  # "per-prompt": one Gaussian per prompt; "amortized": mu, sigma = f(text embedding)
    amortized_hidden: int = 64  # amortized only: hidden units of an extra MLP path (0: linear in the embedding)
    amortized_rank: int = 0  # amortized only: rank of the channel x space path (0: none)
    amortized_linear: bool = True  # amortized only: keep the path linear in the embedding
    eval_prompts: list[str] = field(default_factory=list)  # amortized only: held-out prompts exported and scored too
    learn_std: bool = False  # sigma = 1: the learned mean alone steers (a learned sigma shrinks and costs diversity)
    min_std: float = 0.5
    seed: int = 0

    def validate(self) -> None:
        if not self.prompts:
            raise ValueError("no prompts given; pass --prompts 'a green circle' ... or a --prompts-file")
        if self.num_env_runners < 0 or not self.num_gpus_per_env_runner >= 0 or not self.num_gpus_per_learner >= 0:
            raise ValueError(f"num_env_runners, num_gpus_per_env_runner and num_gpus_per_learner must be >= 0, got "
                             f"{self.num_env_runners}, {self.num_gpus_per_env_runner}, {self.num_gpus_per_learner}")
        if self.num_reward_workers < 0 or not self.num_gpus_per_reward_worker >= 0:
            raise ValueError(f"num_reward_workers and num_gpus_per_reward_worker must be >= 0, got {self.num_reward_workers}, {self.num_gpus_per_reward_worker}")
        if self.samples_per_prompt < 2:
            raise ValueError(f"samples_per_prompt must be >= 2 (per-prompt statistics), got {self.samples_per_prompt}")
        if self.clip_param is not None and not self.clip_param > 0:  # NaN fails too; inf passes (no clipping)
            raise ValueError(f"clip_param must be > 0 (or 'inf' for no clipping), got {self.clip_param}")
        if not (math.isfinite(self.lr) and self.lr > 0) or self.num_epochs < 1:
            raise ValueError(f"lr must be a finite number > 0 and num_epochs >= 1, got lr={self.lr}, num_epochs={self.num_epochs}")
        if not (math.isfinite(self.min_std) and self.min_std > 0):
            raise ValueError(f"min_std must be a finite number > 0 (the floor of the policy's std), got {self.min_std}")
        if self.minibatches_per_epoch < 1 or self.batch_size % self.minibatches_per_epoch:
            raise ValueError(
                f"minibatches_per_epoch={self.minibatches_per_epoch} must divide the batch of {self.batch_size} samples"
            )
        if self.mean_highpass is not None and len(self.latent_shape) != 3:
            raise ValueError(f"mean_highpass works on image latents (C, H, W), not {tuple(self.latent_shape)}; drop --mean-highpass")
        if self.mean_highpass is not None and (self.mean_highpass < 1 or any(n % self.mean_highpass for n in self.latent_shape[1:])):
            raise ValueError(f"mean_highpass must be a block size >= 1 that divides the latent's {tuple(self.latent_shape[1:])}, "
                             f"got {self.mean_highpass}")
        if self.policy_type not in ("per-prompt", "amortized"):
            raise ValueError(f"policy_type must be 'per-prompt' or 'amortized', got {self.policy_type!r}")
        if self.policy_type == "amortized" and (self.std_mode != "scalar" or self.mean_highpass is not None):
            raise ValueError("the amortized policy has a scalar std and no high-pass mean; drop --std-mode element / --mean-highpass")
        if self.amortized_hidden < 0 or self.amortized_rank < 0:
            raise ValueError(f"--amortized-hidden and --amortized-rank must be >= 0, got {self.amortized_hidden}, {self.amortized_rank}")
        if not (self.amortized_linear or self.amortized_hidden or self.amortized_rank):
            raise ValueError("--no-amortized-linear needs --amortized-hidden > 0 or --amortized-rank > 0: the mean needs one path")
        if self.eval_prompts and self.policy_type != "amortized":
            raise ValueError("--eval-prompts (held-out prompts) needs --policy-type amortized: a per-prompt policy has nothing for them")
        if any(not isinstance(p, str) or not p.strip() for p in self.eval_prompts):
            raise ValueError("--eval-prompts got an empty prompt; pass held-out prompts like 'a green circle'")
        if set(self.eval_prompts) & set(self.prompts):
            raise ValueError(f"--eval-prompts must be held out: {sorted(set(self.eval_prompts) & set(self.prompts))} are also trained")
        if self.mean_resolution is not None and not 1 <= self.mean_resolution <= min(self.latent_shape[1:]):
            raise ValueError(f"mean_resolution must be in [1, {min(self.latent_shape[1:])}] or None, got {self.mean_resolution}")

    @property
    def batch_size(self) -> int:
        """Samples (episodes) per env runner per iteration: every prompt gets ``samples_per_prompt``."""
        return len(self.prompts) * self.samples_per_prompt

    @property
    def runners(self) -> int:
        """Processes that sample: the env-runner actors, or the driver when there are none."""
        return max(self.num_env_runners, 1)

    @property
    def samples_per_prompt_per_iteration(self) -> int:
        """Reward evaluations each prompt gets per iteration, over all runners."""
        return self.samples_per_prompt * self.runners

    def env_config(self) -> dict:
        return dict(model=self.model, prompts=list(self.prompts), reward=self.reward,
                    num_inference_steps=self.num_inference_steps, guidance_scale=self.guidance_scale, eta=self.eta,
                    device=self.device, dtype=self.dtype, compile_unet=self.compile_unet, num_frames=self.num_frames, num_reward_workers=self.num_reward_workers, torch_threads=self.torch_threads, seed=self.seed)
