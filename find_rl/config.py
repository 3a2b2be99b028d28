"""``find_ppo_config``: the RLlib ``PPOConfig`` for FIND, built from typed settings and validated early."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from find_rl import ENV_ID
from find_rl.learner import FindPPOTorchLearner
from find_rl.noise_module import NoisePolicyModule
from find_rl.settings import FindSettings

#: "module:id" makes every process (env-runner actors included) import find_rl, which registers the env.
ENV = f"find_rl:{ENV_ID}"


@dataclass
class RunSettings:
    """Everything one FIND run needs besides :class:`FindSettings`. Defaults = the embedded shapes world."""

    model: str = "shapes"
    reward: str = "shapes"
    prompts: list[str] = field(default_factory=list)
    latent_shape: tuple[int, ...] = (3, 16, 16)
    samples_per_prompt: int = 32  # images per prompt per iteration (per env runner)
    num_env_runners: int = 0  # 0: sample in the driver process (fastest on a small CPU box)
    num_gpus_per_env_runner: float = 0.0
    num_gpus_per_learner: float = 0.0
    device: str = "cpu"
    num_inference_steps: int = 10
    guidance_scale: float = 1.0
    eta: float = 0.0
    torch_threads: int | None = None
    lr: float = 0.05
    clip_param: float | None = 0.2  # None / inf: no clipping (ablation)
    num_epochs: int = 4
    minibatches_per_epoch: int = 1
    mean_resolution: int | None = 4
    std_mode: str = "scalar"
    learn_std: bool = True
    min_std: float = 0.5
    seed: int = 0

    def validate(self) -> None:
        if not self.prompts:
            raise ValueError("no prompts given; pass --prompts 'a green circle' ... or a --prompts-file")
        if self.samples_per_prompt < 2:
            raise ValueError(f"samples_per_prompt must be >= 2 (per-prompt statistics), got {self.samples_per_prompt}")
        if self.clip_param is not None and not math.isinf(self.clip_param) and self.clip_param <= 0:
            raise ValueError(f"clip_param must be > 0 (or 'inf' for no clipping), got {self.clip_param}")
        if self.lr <= 0 or self.num_epochs < 1:
            raise ValueError(f"lr must be > 0 and num_epochs >= 1, got lr={self.lr}, num_epochs={self.num_epochs}")
        if self.minibatches_per_epoch < 1 or self.batch_size % self.minibatches_per_epoch:
            raise ValueError(
                f"minibatches_per_epoch={self.minibatches_per_epoch} must divide the batch of {self.batch_size} samples"
            )
        if self.mean_resolution is not None and not 1 <= self.mean_resolution <= min(self.latent_shape[1:]):
            raise ValueError(f"mean_resolution must be in [1, {min(self.latent_shape[1:])}] or None, got {self.mean_resolution}")

    @property
    def batch_size(self) -> int:
        """Samples (episodes) per env runner per iteration: every prompt gets ``samples_per_prompt``."""
        return len(self.prompts) * self.samples_per_prompt

    def env_config(self) -> dict:
        return dict(model=self.model, prompts=list(self.prompts), reward=self.reward,
                    num_inference_steps=self.num_inference_steps, guidance_scale=self.guidance_scale, eta=self.eta,
                    device=self.device, torch_threads=self.torch_threads, seed=self.seed)


def find_ppo_config(run: RunSettings, find: FindSettings) -> PPOConfig:
    """Build the PPOConfig: vector env, NoisePolicyModule, FindPPOTorchLearner, one render call per iteration."""
    run.validate()
    find.prompts = list(run.prompts)
    runners = max(run.num_env_runners, 1)
    train_batch = run.batch_size * runners  # one vector step per runner per iteration (reset steps do not count)
    # RLlib turns each one-step episode into 2 rows (one masked), so a minibatch of M rows holds ~M/2 samples;
    # None = the whole batch in every gradient step.
    minibatch = None if run.minibatches_per_epoch == 1 else 2 * train_batch // run.minibatches_per_epoch
    config = (
        PPOConfig()
        .environment(ENV, env_config=run.env_config(), disable_env_checking=True)
        .env_runners(
            num_env_runners=run.num_env_runners,
            num_envs_per_env_runner=run.batch_size,
            gym_env_vectorize_mode="vector_entry_point",
            num_gpus_per_env_runner=run.num_gpus_per_env_runner,
            rollout_fragment_length="auto",
        )
        .learners(learner_class=FindPPOTorchLearner, learner_config_dict=find.to_dict(),
                  num_gpus_per_learner=run.num_gpus_per_learner)
        .training(
            lr=run.lr,
            train_batch_size_per_learner=train_batch,
            minibatch_size=minibatch,
            num_epochs=run.num_epochs,
            clip_param=run.clip_param if run.clip_param is not None else math.inf,
            gamma=1.0,
            lambda_=1.0,
            use_kl_loss=False,
            use_critic=False,
            entropy_coeff=0.0,
            grad_clip=None,
        )
        .rl_module(
            rl_module_spec=RLModuleSpec(
                module_class=NoisePolicyModule,
                model_config=dict(num_prompts=len(run.prompts), latent_shape=list(run.latent_shape),
                                  mean_resolution=run.mean_resolution, std_mode=run.std_mode,
                                  learn_std=run.learn_std, min_std=run.min_std),
            )
        )
        .debugging(seed=run.seed)
    )
    return config
