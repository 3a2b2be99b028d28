"""``FindPPOTorchLearner``: RLlib's PPO learner with FIND's reward calibration and per-element ratio clipping.

Hooks (each marked ``@override``):
- ``build``: creates the :class:`~find_rl.objectives.calibration.RewardCalibrator` and swaps PPO's GAE connector for
  :class:`~find_rl.rllib.connectors.CalibrateRewards` (a one-step MDP has nothing to bootstrap; the advantage is the
  calibrated reward).
- ``compute_loss_for_module``: the clipped surrogate on the per-element log-ratio against the **behaviour**
  policy that drew each sample (RLlib's recorded ``action_logp``), so reusing a batch over several epochs and
  minibatches is valid; plus an optional anchor to N(0, I), with a fixed weight or a per-prompt adaptive one
  (:mod:`find_rl.objectives.anchor`). See :mod:`find_rl.policies.policy_math` for the math and
  the trust region ``clip_param`` implies.
- the objective: FIND's clipped surrogate (``--objective ppo``), or for the flow family a mass-covering objective fitted
  to q* ∝ N(0, I) exp(r / beta) on the behaviour's draws (``log-variance``, ``iw-mle``; :mod:`find_rl.objectives.mass_covering`),
  optionally with replayed past renders (:class:`~find_rl.objectives.replay.RenderReplay`), with the effective sample size logged.
- ``get_state`` / ``set_state``: the calibrator (g, its optimiser, its history) is part of the checkpoint.
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.connectors.learner import GeneralAdvantageEstimation
from ray.rllib.core.columns import Columns
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.utils.annotations import override

from find_rl.core import keys
from find_rl.objectives import mass_covering as ob
from find_rl.policies import policy_math as pm
from find_rl.objectives.anchor import AdaptiveAnchor
from find_rl.objectives.calibration import RewardCalibrator
from find_rl.rllib.connectors import CalibrateRewards
from find_rl.core.observation import ObservationLayout
from find_rl.objectives.replay import RenderReplay, RewardedReplay

CALIBRATION_STATE = "reward_calibration"
ANCHOR_STATE = "adaptive_anchor"
REPLAY_STATE = "rewarded_replay"
RENDER_REPLAY_STATE = "render_replay"


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
        self.adaptive_anchor = (
            AdaptiveAnchor(num_groups=module.num_prompts, target=s.target_alignment, init=max(s.anchor_coeff, 1e-3),
                           factor=s.anchor_factor)
            if s.target_alignment is not None else None
        )
        self.replay = (RewardedReplay(num_groups=len(self.prompts), size=s.replay_size)
                       if s.replay_coeff > 0 and hasattr(module, "log_prob") else None)
        self.render_replay = (RenderReplay(num_groups=len(self.prompts), size=s.render_replay)
                              if s.mass_covering and s.render_replay > 0 else None)
        if self._learner_connector is not None:  # None only with aggregator actors
            # One-step episodes: advantages are calibrated rewards, not GAE over a trajectory.
            self._learner_connector.remove(GeneralAdvantageEstimation)
            self._learner_connector.append(CalibrateRewards(calibrator=self.calibrator, prompts=self.prompts,
                                                            anchor=self.adaptive_anchor, replay=self.replay,
                                                            render_replay=self.render_replay))

    @override(PPOTorchLearner)
    def compute_loss_for_module(self, *, module_id: str, config, batch: dict[str, Any], fwd_out: dict[str, Any]) -> torch.Tensor:
        s = self.find_settings
        mask = batch[Columns.LOSS_MASK].bool()
        if not mask.any():  # every reward in this minibatch was invalid: nothing to learn from
            return fwd_out[Columns.ACTION_DIST_INPUTS].sum() * 0.0
        if s.mass_covering:
            return self._mass_covering_loss(module_id, batch, mask)
        n = mask.sum()

        def masked_mean(x: torch.Tensor) -> torch.Tensor:
            return torch.where(mask, x, torch.zeros_like(x)).sum() / n

        z, obs = batch[Columns.ACTIONS], batch[Columns.OBS]
        dim = z.shape[-1]
        module = self.module[module_id].unwrapped()
        if hasattr(module, "log_prob"):  # the flow family: its exact joint log-density, per element
            logp_new = module.log_prob(obs, z) / dim
            # the true reverse KL(q || N(0, I)) on fresh draws of the policy (entropy included), per latent element
            anchor = module.reverse_kl(obs[mask]) / dim
            weighted_anchor = s.kl_coeff * anchor + s.replay_coeff * self._replay_nll(module, dim)
            with torch.no_grad():
                mu, log_std = module.moment_summary(obs, n=16)
        else:
            mu, log_std = pm.split_dist_inputs(fwd_out[Columns.ACTION_DIST_INPUTS])
            logp_new = pm.mean_log_density(z, mu, log_std)
            anchor, weighted_anchor = self._gaussian_anchor(mu, log_std, obs, masked_mean)
        logp_old = batch[Columns.ACTION_LOGP] / dim  # behaviour policy, as recorded by the env runner
        log_r = pm.log_ratio(logp_new, logp_old)
        ratio = torch.exp(log_r)
        clip = s.clip  # None: no clipping (--clip-param inf)
        surrogate = pm.clipped_surrogate(ratio, batch[Postprocessing.ADVANTAGES], clip, mode=s.surrogate)
        policy_loss = masked_mean(surrogate)
        total = policy_loss + weighted_anchor

        with torch.no_grad():
            rows = mask.nonzero().squeeze(-1)
            r, lr_ = ratio[rows], log_r[rows]
            self.metrics.log_dict(
                {
                    keys.POLICY_LOSS: policy_loss.item(),
                    keys.ANCHOR: anchor.item(),
                    keys.CLIP_FRACTION: pm.clip_fraction(r, clip).item(),
                    keys.APPROX_KL: pm.approx_kl(lr_).item(),
                    keys.RATIO_MEAN: r.mean().item(),
                    keys.RATIO_MIN: r.min().item(),
                    keys.RATIO_MAX: r.max().item(),
                    keys.ENTROPY: masked_mean(pm.entropy_per_element(log_std)).item(),
                    keys.MU_ABS: masked_mean(mu.abs().mean(-1)).item(),
                    keys.STD_MEAN: masked_mean(log_std.exp().mean(-1)).item(),
                },
                key=(module_id, keys.FIND),
                window=1,
            )
        return total

    def _mass_covering_loss(self, module_id: str, batch: dict[str, Any], mask: torch.Tensor) -> torch.Tensor:
        """``--objective log-variance`` / ``iw-mle`` on this batch's valid rows (plus replayed renders), joint nats."""
        s, module = self.find_settings, self.module[module_id].unwrapped()
        rows = mask.nonzero().squeeze(-1)
        z, obs, log_b = batch[Columns.ACTIONS][rows], batch[Columns.OBS][rows], batch[Columns.ACTION_LOGP][rows]
        reward = batch[Postprocessing.VALUE_TARGETS][rows].float()  # the raw rewards (CalibrateRewards)
        group = self.layout.prompt_index(obs)
        stored = self.render_replay.tensors() if self.render_replay is not None else None
        if stored is not None:  # past renders widen the behaviour; they enter the loss like fresh rows
            device = z.device
            z, log_b, obs, reward, group = (torch.cat([a, b.to(device)]) for a, b in
                                            zip((z, log_b, obs, reward, group), stored))
        log_q, log_p = module.log_prob(obs, z), ob.log_prior(z)
        num = len(self.prompts)
        if s.objective == "log-variance":
            loss, log_z = ob.log_variance_loss(log_q, log_p, reward, group, beta=s.beta, num_groups=num)
        else:
            loss = ob.iw_mle_loss(log_q, log_p, log_b, reward, group, beta=s.beta, num_groups=num)
            log_z = torch.full_like(log_q, float("nan"))
        with torch.no_grad():
            fresh = slice(0, len(rows))  # this batch's own rows (the replay follows them)
            dim = z.shape[-1]
            log_r = (log_q[fresh] - log_b[fresh]) / dim
            ratio = torch.exp(log_r)
            ess = ob.effective_sample_size(log_p[fresh], log_b[fresh], reward[fresh], group[fresh], beta=s.beta,
                                           num_groups=num)
            mu, log_std = module.moment_summary(obs[fresh], n=16)
            self.metrics.log_dict(
                {
                    keys.POLICY_LOSS: loss.item(),
                    keys.ANCHOR: 0.0,
                    keys.CLIP_FRACTION: 0.0,
                    keys.APPROX_KL: pm.approx_kl(log_r).item(),
                    keys.RATIO_MEAN: ratio.mean().item(),
                    keys.RATIO_MIN: ratio.min().item(),
                    keys.RATIO_MAX: ratio.max().item(),
                    keys.ENTROPY: pm.entropy_per_element(log_std).mean().item(),
                    keys.MU_ABS: mu.abs().mean().item(),
                    keys.STD_MEAN: log_std.exp().mean().item(),
                    keys.ESS: float(torch.nanmean(ess)),
                    keys.LOG_Z: float(torch.nanmean(log_z[fresh])),
                    keys.REPLAYED: 0 if stored is None else len(stored[0]),
                },
                key=(module_id, keys.FIND),
                window=1,
            )
        return loss

    def _replay_nll(self, module, dim: int) -> torch.Tensor:
        """Importance-weighted negative log-likelihood of the replayed rewarded noises, per element (find_rl/objectives/replay.py)."""
        from find_rl.policies.flow import replay_weights

        stored = self.replay.tensors() if self.replay is not None else None
        if stored is None:
            return torch.zeros((), device=self._device or "cpu")
        z, logp_b, obs, group = (t.to(self._device or "cpu") for t in stored)
        w = replay_weights(z, logp_b, group)
        return -(w * module.log_prob(obs, z)).mean() / dim

    def _gaussian_anchor(self, mu: torch.Tensor, log_std: torch.Tensor, obs: torch.Tensor, masked_mean):
        """The Gaussian families' pull toward N(0, I): ``(anchor, weighted anchor)`` (fixed or per-prompt adaptive weight)."""
        s = self.find_settings
        if s.anchor == "none":
            zero = torch.zeros((), device=mu.device)
            return zero, zero
        per_row = pm.kl_to_standard_normal(mu, log_std) if s.anchor == "kl" else pm.l2_anchor(mu, log_std)
        anchor = masked_mean(per_row)
        if self.adaptive_anchor is not None:  # one weight per prompt (obs one-hot -> prompt index)
            coeff = self.adaptive_anchor.coeffs.to(mu.device)[self.layout.prompt_index(obs)]
            return anchor, masked_mean(coeff * per_row)
        return anchor, s.anchor_coeff * anchor

    @override(PPOTorchLearner)
    def configure_optimizers_for_module(self, module_id, config=None) -> None:
        """A module that names parameter groups with learning-rate multipliers (the flow: its per-prompt shift and scale
        at ``lr``, its coupling nets slower) gets one Adam per group; the Gaussian families RLlib's default."""
        module = self._module[module_id].unwrapped()
        if not hasattr(module, "optimizer_param_groups"):
            return super().configure_optimizers_for_module(module_id, config)
        for name, params, scale in module.optimizer_param_groups():
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
            if hasattr(module.unwrapped(), "project"):
                module.unwrapped().project()

    @override(PPOTorchLearner)
    def get_state(self, components=None, *, not_components=None, **kwargs):
        state = super().get_state(components, not_components=not_components, **kwargs)
        if self._check_component(CALIBRATION_STATE, components, not_components):
            state[CALIBRATION_STATE] = self.calibrator.get_state()
        if self.adaptive_anchor is not None and self._check_component(ANCHOR_STATE, components, not_components):
            state[ANCHOR_STATE] = self.adaptive_anchor.get_state()
        if self.replay is not None and self._check_component(REPLAY_STATE, components, not_components):
            state[REPLAY_STATE] = self.replay.get_state()
        if self.render_replay is not None and self._check_component(RENDER_REPLAY_STATE, components, not_components):
            state[RENDER_REPLAY_STATE] = self.render_replay.get_state()
        return state

    @override(PPOTorchLearner)
    def set_state(self, state) -> None:
        super().set_state(state)
        if CALIBRATION_STATE in state:
            self.calibrator.set_state(state[CALIBRATION_STATE])
        if ANCHOR_STATE in state and self.adaptive_anchor is not None:
            self.adaptive_anchor.set_state(state[ANCHOR_STATE])
        if REPLAY_STATE in state and self.replay is not None:
            self.replay.set_state(state[REPLAY_STATE])
        if RENDER_REPLAY_STATE in state and self.render_replay is not None:
            self.render_replay.set_state(state[RENDER_REPLAY_STATE])
