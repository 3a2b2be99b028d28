"""``FindPPOTorchLearner``: RLlib's PPO learner with FIND's reward calibration and an objective object for its loss.

Hooks (each marked ``@override``):
- ``build``: creates the :class:`~find_rl.objectives.calibration.RewardCalibrator`, the learner-owned state the settings
  ask for (adaptive anchor, rewarded replay, render replay), the objective (:func:`find_rl.rllib.losses.make_objective`),
  and swaps PPO's GAE connector for the reward pieces of :mod:`find_rl.rllib.connectors` (a one-step MDP has nothing to
  bootstrap; the advantage is the calibrated reward).
- ``compute_loss_for_module``: the objective's loss on the valid rows (:mod:`find_rl.rllib.losses`); the module is
  reached only through the policy-family protocol (:class:`~find_rl.rllib.noise_policy.NoisePolicyRLModule`).
- ``configure_optimizers_for_module``: one Adam per parameter group a module names (the flow), else RLlib's.
- ``after_gradient_based_update``: the render replay commits this iteration's renders; every module projects; the
  mass-covering target's temperature moves to the next iteration's (``--beta-final``); a seeding family
  (``--mixture-seed-share``) is placed on the aligned draws it collected, after its last seeding iteration, during
  which the loss was 0.
- ``get_state`` / ``set_state``: the calibrator (g, its optimiser, its history), the adaptive anchor, the replays and
  the iterations done (the beta schedule's clock) are part of the checkpoint.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.connectors.learner import GeneralAdvantageEstimation
from ray.rllib.core.columns import Columns
from ray.rllib.utils.annotations import override

from find_rl.core import keys
from find_rl.core.observation import ObservationLayout
from find_rl.objectives.anchor import AdaptiveAnchor
from find_rl.objectives.calibration import RewardCalibrator
from find_rl.objectives.mass_covering import annealed_beta
from find_rl.objectives.replay import RenderReplay, RewardedReplay
from find_rl.rllib.connectors import reward_pieces
from find_rl.rllib.losses import LearnerState, make_objective

CALIBRATION_STATE = "reward_calibration"
ANCHOR_STATE = "adaptive_anchor"
REPLAY_STATE = "rewarded_replay"
RENDER_REPLAY_STATE = "render_replay"
SEEDS_STATE = "seed_draws"
ITERATIONS_STATE = "iterations_done"


class FindPPOTorchLearner(PPOTorchLearner):
    @override(PPOTorchLearner)
    def build(self) -> None:
        super().build()  # PPOLearner prepends AddOneTsToEpisodesAndTruncate and appends GAE here
        self.find_settings = s = self.config.find  # typed (find_rl.rllib.config.FindPPOConfig)
        self.prompts = list(self.config.prompts)
        self.layout = ObservationLayout(len(self.prompts))
        module = next(iter(self.module.values())).unwrapped()
        self.calibrator = RewardCalibrator(
            latent_shape=module.latent_shape,
            prompt_dim=module.observation_space.shape[0],
            baseline=s.baseline,
            ema_momentum=s.ema_momentum,
            normalize=s.calibration_normalize,
            hidden=s.calibration_hidden,
            lr=s.calibration_lr,
            steps=s.calibration_steps,
            history=s.calibration_history,
            device=self._device or "cpu",
        )
        # the settings of one family only (refused for the others by find_rl.core.settings)
        self.adaptive_anchor = (
            AdaptiveAnchor(num_groups=len(self.prompts), target=s.target_alignment, init=max(s.anchor_coeff, 1e-3),
                           factor=s.anchor_factor)
            if s.target_alignment is not None else None
        )
        self.replay = RewardedReplay(num_groups=len(self.prompts), size=s.replay_size) if s.replay_coeff > 0 else None
        self.render_replay = (RenderReplay(num_groups=len(self.prompts), size=s.render_replay)
                              if s.mass_covering and s.render_replay > 0 else None)
        # a seeding family (the seeded mixture): the aligned draws it will be placed on, collected while it seeds
        share, seed_draws = module.seeding()
        self.seed_iterations = max(1, round(share * self.config.iterations)) if share > 0 else 0
        self.seeds = RewardedReplay(num_groups=len(self.prompts), size=seed_draws) if self.seed_iterations else None
        self.objective = make_objective(s)
        # PPO's knobs are read under RLlib's names from the config (config.training(clip_param=...) is honoured)
        clip = None if math.isinf(self.config.clip_param) else float(self.config.clip_param)
        self.iterations_done = 0
        self.state_for_objective = LearnerState(find=s, layout=self.layout, clip=clip, adaptive_anchor=self.adaptive_anchor,
                                                replay=self.replay, render_replay=self.render_replay, beta=self._beta())
        if self._learner_connector is not None:  # None only with aggregator actors
            # One-step episodes: advantages are calibrated rewards, not GAE over a trajectory.
            self._learner_connector.remove(GeneralAdvantageEstimation)
            for piece in reward_pieces(calibrator=self.calibrator, prompts=self.prompts, anchor=self.adaptive_anchor,
                                       replay=self.replay, render_replay=self.render_replay, seeds=self.seeds):
                self._learner_connector.append(piece)

    def _beta(self) -> float:
        """The mass-covering target's temperature for the iteration about to be learned from."""
        return annealed_beta(self.find_settings.beta, self.find_settings.beta_final, self.iterations_done, self.config.iterations)

    @override(PPOTorchLearner)
    def compute_loss_for_module(self, *, module_id: str, config, batch: dict[str, Any], fwd_out: dict[str, Any]) -> torch.Tensor:
        mask = batch[Columns.LOSS_MASK].bool()
        if not mask.any():  # every reward in this minibatch was invalid: nothing to learn from
            return fwd_out[Columns.ACTION_DIST_INPUTS].sum() * 0.0
        module = self.module[module_id].unwrapped()
        if self.iterations_done < self.seed_iterations:  # seeding: the draws are collected, nothing is learned
            with torch.no_grad():  # the metrics only (no backward through K full-resolution components)
                _, metrics = self.objective.loss(module, batch, fwd_out, mask, self.state_for_objective)
            self.metrics.log_dict({**metrics, keys.SEEDING: 1.0}, key=(module_id, keys.FIND), window=1)
            return fwd_out[Columns.ACTION_DIST_INPUTS].sum() * 0.0
        loss, metrics = self.objective.loss(module, batch, fwd_out, mask, self.state_for_objective)
        self.metrics.log_dict(metrics, key=(module_id, keys.FIND), window=1)
        return loss

    @override(PPOTorchLearner)
    def configure_optimizers_for_module(self, module_id, config=None) -> None:
        """A module that names parameter groups with learning-rate multipliers (the flow: its per-prompt shift and scale
        at ``lr``, its coupling nets slower) gets one Adam per group; otherwise RLlib's default."""
        groups = self._module[module_id].unwrapped().optimizer_param_groups()
        if groups is None:
            return super().configure_optimizers_for_module(module_id, config)
        for name, params, scale in groups:
            params = [p for p in params if p.requires_grad]
            if params:
                self.register_optimizer(module_id=module_id, optimizer_name=name, optimizer=torch.optim.Adam(params),
                                        params=params, lr_or_lr_schedule=config.lr * scale)

    @override(PPOTorchLearner)
    def after_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        super().after_gradient_based_update(timesteps=timesteps)
        if self.render_replay is not None:  # this iteration's renders join the replay after their own update
            self.render_replay.commit()
        for module in self.module.values():
            module.unwrapped().project()
        self.iterations_done += 1
        if self.seeds is not None and self.iterations_done == self.seed_iterations:
            for module in self.module.values():
                module.unwrapped().seed([self.seeds.noises(g) for g in range(len(self.prompts))])
            self.seeds.clear()  # the connector stops feeding it once seeding is over
        self.state_for_objective.beta = self._beta()

    @override(PPOTorchLearner)
    def get_state(self, components=None, *, not_components=None, **kwargs):
        state = super().get_state(components, not_components=not_components, **kwargs)
        if self._check_component(ITERATIONS_STATE, components, not_components):
            state[ITERATIONS_STATE] = self.iterations_done
        if self._check_component(CALIBRATION_STATE, components, not_components):
            state[CALIBRATION_STATE] = self.calibrator.get_state()
        if self.adaptive_anchor is not None and self._check_component(ANCHOR_STATE, components, not_components):
            state[ANCHOR_STATE] = self.adaptive_anchor.get_state()
        if self.replay is not None and self._check_component(REPLAY_STATE, components, not_components):
            state[REPLAY_STATE] = self.replay.get_state()
        if self.render_replay is not None and self._check_component(RENDER_REPLAY_STATE, components, not_components):
            state[RENDER_REPLAY_STATE] = self.render_replay.get_state()
        if self.seeds is not None and self._check_component(SEEDS_STATE, components, not_components):
            state[SEEDS_STATE] = self.seeds.get_state()
        return state

    @override(PPOTorchLearner)
    def set_state(self, state) -> None:
        super().set_state(state)
        if ITERATIONS_STATE in state:
            self.iterations_done = int(state[ITERATIONS_STATE])
            self.state_for_objective.beta = self._beta()
        if CALIBRATION_STATE in state:
            self.calibrator.set_state(state[CALIBRATION_STATE])
        if ANCHOR_STATE in state and self.adaptive_anchor is not None:
            self.adaptive_anchor.set_state(state[ANCHOR_STATE])
        if REPLAY_STATE in state and self.replay is not None:
            self.replay.set_state(state[REPLAY_STATE])
        if RENDER_REPLAY_STATE in state and self.render_replay is not None:
            self.render_replay.set_state(state[RENDER_REPLAY_STATE])
        if SEEDS_STATE in state and self.seeds is not None:
            self.seeds.set_state(state[SEEDS_STATE])
