"""``FindPPOConfig``: RLlib's ``PPOConfig`` that carries FIND's typed learner settings, and ``find_ppo_config``, the one
builder that turns :class:`~find_rl.core.settings.RunSettings` into it.

The learner reads ``config.find`` (a :class:`~find_rl.core.settings.FindSettings`) and ``config.prompts`` instead of a
loose ``learner_config_dict``; the RLModule is chosen by the policy family (``--policy-type``).
The algorithm is :class:`FindPPO`, RLlib's PPO whose log folder is the run's own (``config.run_dir``).
"""

from __future__ import annotations

from ray.rllib.algorithms.ppo import PPO, PPOConfig
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.annotations import override
from ray.tune import Trainable

from find_rl import ENV_ID
from find_rl.core.settings import FindSettings, RunSettings
from find_rl.rllib.families import module_spec
from find_rl.rllib.learner import FindPPOTorchLearner

#: "module:id" makes every process (env-runner actors included) import find_rl, which registers the env.
ENV = f"find_rl:{ENV_ID}"


class FindPPOConfig(PPOConfig):
    """PPOConfig plus ``find`` (FIND's learner settings) and ``prompts`` (the env's prompt list: metric names)."""

    def __init__(self, algo_class=None):
        super().__init__(algo_class=algo_class or FindPPO)
        self.find = FindSettings()
        self.prompts: list[str] = []
        self.iterations = 1  # the run's training iterations (what a schedule such as --beta-final spans)
        self.run_dir: str | None = None  # the run folder, the algorithm's log folder (FindPPO)

    def find_settings(self, find: FindSettings, prompts: list[str], *, iterations: int = 1) -> "FindPPOConfig":
        """Set FIND's learner settings, the run's iteration count and the PPO knobs they carry under RLlib's names."""
        self.find = find
        self.prompts = list(prompts)
        self.iterations = int(iterations)
        return self.training(lr=find.lr, num_epochs=find.num_epochs, clip_param=find.clip_param)

    def run_folder(self, path) -> "FindPPOConfig":
        """The run's folder: the built algorithm's ``logdir`` (None: it has none)."""
        self.run_dir = None if path is None else str(path)
        return self

    @override(PPOConfig)
    def get_default_learner_class(self):
        return FindPPOTorchLearner

    @override(PPOConfig)
    def validate(self) -> None:
        super().validate()
        if not isinstance(self.find, FindSettings):
            raise ValueError(f"FindPPOConfig.find must be a FindSettings, got {type(self.find).__name__}; use .find_settings()")
        if not self.prompts:
            raise ValueError("FindPPOConfig has no prompts; call .find_settings(find, prompts)")


class FindPPO(PPO):
    """RLlib's PPO, built from a :class:`FindPPOConfig`, whose log folder is the run's own folder.

    Ray 2.60's ``Trainable`` has no ``logger_creator`` any more: an algorithm built outside Tune makes a fresh, empty
    ``~/ray_results/<date><random>`` folder as its ``logdir`` and writes nothing there (events, W&B and MLflow go
    through :mod:`find_rl.run.tracking`). FindPPO points ``logdir`` at ``config.run_dir`` instead and creates nothing.
    """

    @classmethod
    @override(PPO)
    def get_default_config(cls) -> FindPPOConfig:
        return FindPPOConfig()

    @override(Trainable)
    def _setup_logdir(self) -> None:
        if self._storage:  # run as a Tune trainable: Tune's own trial folder
            super()._setup_logdir()
            return
        self._logdir = getattr(self.config, "run_dir", None)


def find_ppo_config(run: RunSettings) -> FindPPOConfig:
    """Build the config: vector env, the policy family's RLModule, FindPPOTorchLearner, one render call per iteration."""
    run.validate()
    res, find = run.resources, run.find
    train_batch = run.batch_size * run.runners  # one vector step per runner per iteration (reset steps do not count)
    # RLlib turns each one-step episode into 2 rows (one masked), so a minibatch of M rows holds ~M/2 samples;
    # None = the whole batch in every gradient step.
    minibatch = None if find.minibatches_per_epoch == 1 else 2 * train_batch // find.minibatches_per_epoch
    return (
        FindPPOConfig()
        .environment(ENV, env_config=run.env_config(), disable_env_checking=True)
        .env_runners(
            num_env_runners=res.num_env_runners,
            num_envs_per_env_runner=run.batch_size,
            gym_env_vectorize_mode="vector_entry_point",
            num_gpus_per_env_runner=res.num_gpus_per_env_runner,
            custom_resources_per_env_runner=dict(res.env_runner_resources),
            rollout_fragment_length="auto",
        )
        .learners(num_gpus_per_learner=res.num_gpus_per_learner)
        .find_settings(find, run.prompts, iterations=run.loop.iterations)
        .training(train_batch_size_per_learner=train_batch, minibatch_size=minibatch, gamma=1.0, lambda_=1.0,
                  use_kl_loss=False, use_critic=False, entropy_coeff=0.0, grad_clip=None)
        .rl_module(rl_module_spec=module_spec(run.policy, num_prompts=len(run.prompts), latent_shape=run.latent_shape,
                                              prior_share=find.behaviour_prior_share, token_shape=run.token_shape))
        # a dead env runner (a reclaimed spot node, an OOM) is restarted and training goes on without it meanwhile
        .fault_tolerance(restart_failed_env_runners=True, max_num_env_runner_restarts=1000, ignore_env_runner_failures=False)
        .debugging(seed=run.loop.seed)
    )
