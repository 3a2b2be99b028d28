"""``find_ppo_config``: the RLlib ``PPOConfig`` for FIND, built from typed settings and validated early."""

from __future__ import annotations

import math
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from find_rl import ENV_ID
from find_rl.learner import FindPPOTorchLearner
from find_rl.noise_module import AmortizedNoisePolicyModule, NoisePolicyModule
from find_rl.settings import FindSettings, RunSettings  # noqa: F401  (RunSettings re-exported)

#: "module:id" makes every process (env-runner actors included) import find_rl, which registers the env.
ENV = f"find_rl:{ENV_ID}"


def find_ppo_config(run: RunSettings, find: FindSettings) -> PPOConfig:
    """Build the PPOConfig: vector env, NoisePolicyModule, FindPPOTorchLearner, one render call per iteration."""
    run.validate()
    find.prompts = list(run.prompts)
    train_batch = run.batch_size * run.runners  # one vector step per runner per iteration (reset steps do not count)
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
            custom_resources_per_env_runner=dict(run.env_runner_resources),
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
                module_class=AmortizedNoisePolicyModule if run.policy_type == "amortized" else NoisePolicyModule,
                model_config=dict(num_prompts=len(run.prompts), latent_shape=list(run.latent_shape),
                                  mean_resolution=run.mean_resolution, std_mode=run.std_mode,
                                  learn_std=run.learn_std, min_std=run.min_std, mean_highpass=run.mean_highpass,
                                  hidden=run.amortized_hidden, rank=run.amortized_rank, linear=run.amortized_linear),
            )
        )
        # a dead env runner (a reclaimed spot node, an OOM) is restarted and training goes on without it meanwhile
        .fault_tolerance(restart_failed_env_runners=True, max_num_env_runner_restarts=1000,
                         ignore_env_runner_failures=False)
        .debugging(seed=run.seed)
    )
    return config
