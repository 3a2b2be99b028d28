"""The objective seam: the learner's loss for one module is an :class:`Objective` chosen by ``--objective``.

- :class:`ClippedSurrogate` (``ppo``): FIND's clipped surrogate on the per-element log-ratio against the behaviour
  policy that drew each sample (RLlib's recorded ``action_logp``), plus the policy family's regulariser toward
  N(0, I) (:meth:`~find_rl.rllib.noise_policy.NoisePolicyRLModule.regulariser`).
- :class:`MassCovering` (``log-variance``, ``iw-mle``): fit q* ∝ N(0, I) exp(r / beta) on the behaviour's draws, plus
  replayed renders (:mod:`find_rl.objectives.mass_covering`), on the family's exact log-density (every family has one).

An objective reads the batch after :class:`~find_rl.rllib.connectors.CalibrateRewards` (advantages, raw rewards as
value targets, the loss mask) and returns ``(loss, metrics)``; the learner logs the metrics under ``find``. A new
objective is a class here and a name in :data:`find_rl.objectives.mass_covering.OBJECTIVES`; the learner does not change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.evaluation.postprocessing import Postprocessing

from find_rl.core import keys
from find_rl.core.observation import ObservationLayout
from find_rl.core.settings import FindSettings
from find_rl.objectives import mass_covering as ob
from find_rl.policies import policy_math as pm
from find_rl.rllib.noise_policy import NoisePolicyRLModule, RegulariserContext


@dataclass
class LearnerState:
    """What an objective may read of the learner: FIND's settings, the observation layout and the learner-owned
    state (adaptive anchor, rewarded replay, render replay; None when off)."""

    find: FindSettings
    layout: ObservationLayout
    clip: float | None = None  # PPO's clip_param as the config holds it (None: no clipping)
    adaptive_anchor: Any = None
    replay: Any = None
    render_replay: Any = None
    beta: float = 0.1  # the mass-covering target's temperature this iteration (--beta, annealed by --beta-final)


class Objective:
    def loss(self, module: NoisePolicyRLModule, batch: dict[str, Any], fwd_out: dict[str, Any], mask: torch.Tensor,
             state: LearnerState) -> tuple[torch.Tensor, dict[str, float]]:
        """``(loss, metrics)`` of one minibatch; ``mask``: the valid rows (at least one)."""
        raise NotImplementedError


class ClippedSurrogate(Objective):
    """FIND's objective (``--objective ppo``): ``mean(-min(r A, clip(r) A)) + regulariser``, r the per-element ratio."""

    def loss(self, module, batch, fwd_out, mask, state):
        s = state.find
        n = mask.sum()

        def masked_mean(x: torch.Tensor) -> torch.Tensor:
            return torch.where(mask, x, torch.zeros_like(x)).sum() / n

        z, obs = batch[Columns.ACTIONS], batch[Columns.OBS]
        dim = z.shape[-1]
        logp_new = module.log_density(obs, z, fwd_out) / dim  # per element, through the train distribution
        ctx = RegulariserContext(find=s, layout=state.layout, masked_mean=masked_mean, mask=mask,
                                 adaptive_anchor=state.adaptive_anchor, replay=state.replay)
        anchor, weighted_anchor = module.regulariser(obs, fwd_out, ctx)
        logp_old = batch[Columns.ACTION_LOGP] / dim  # behaviour policy, as recorded by the env runner
        log_r = pm.log_ratio(logp_new, logp_old)
        ratio = torch.exp(log_r)
        surrogate = pm.clipped_surrogate(ratio, batch[Postprocessing.ADVANTAGES], state.clip, mode=s.surrogate)
        policy_loss = masked_mean(surrogate)
        with torch.no_grad():
            mu, log_std = module.summary(obs, fwd_out)
            rows = mask.nonzero().squeeze(-1)
            r, lr_ = ratio[rows], log_r[rows]
            metrics = {
                keys.POLICY_LOSS: policy_loss.item(),
                keys.ANCHOR: anchor.item(),
                keys.CLIP_FRACTION: pm.clip_fraction(r, state.clip).item(),
                keys.APPROX_KL: pm.approx_kl(lr_).item(),
                keys.RATIO_MEAN: r.mean().item(),
                keys.RATIO_MIN: r.min().item(),
                keys.RATIO_MAX: r.max().item(),
                keys.ENTROPY: masked_mean(pm.entropy_per_element(log_std)).item(),
                keys.MU_ABS: masked_mean(mu.abs().mean(-1)).item(),
                keys.STD_MEAN: masked_mean(log_std.exp().mean(-1)).item(),
            }
        return policy_loss + weighted_anchor, metrics


class MassCovering(Objective):
    """``--objective log-variance`` / ``iw-mle`` on the valid rows plus replayed renders, in joint nats."""

    def __init__(self, kind: str):
        if kind not in ("log-variance", "iw-mle"):
            raise ValueError(f"mass-covering objective must be 'log-variance' or 'iw-mle', got {kind!r}")
        self.kind = kind

    def loss(self, module, batch, fwd_out, mask, state):
        rows = mask.nonzero().squeeze(-1)
        z, obs, log_b = batch[Columns.ACTIONS][rows], batch[Columns.OBS][rows], batch[Columns.ACTION_LOGP][rows]
        reward = batch[Postprocessing.VALUE_TARGETS][rows].float()  # the raw rewards (CalibrateRewards)
        group = state.layout.prompt_index(obs)
        stored = state.render_replay.tensors() if state.render_replay is not None else None
        if stored is not None:  # past renders widen the behaviour; they enter the loss like fresh rows
            device = z.device
            z, log_b, obs, reward, group = (torch.cat([a, b.to(device)]) for a, b in
                                            zip((z, log_b, obs, reward, group), stored))
        log_q, log_p = module.log_density(obs, z), ob.log_prior(z)
        num = state.layout.num_prompts
        if self.kind == "log-variance":
            loss, log_z = ob.log_variance_loss(log_q, log_p, reward, group, beta=state.beta, num_groups=num)
        else:
            loss = ob.iw_mle_loss(log_q, log_p, log_b, reward, group, beta=state.beta, num_groups=num)
            log_z = torch.full_like(log_q, float("nan"))
        with torch.no_grad():
            fresh = slice(0, len(rows))  # this batch's own rows (the replay follows them)
            dim = z.shape[-1]
            log_r = (log_q[fresh] - log_b[fresh]) / dim
            ratio = torch.exp(log_r)
            ess = ob.effective_sample_size(log_p[fresh], log_b[fresh], reward[fresh], group[fresh], beta=state.beta,
                                           num_groups=num)
            mu, log_std = module.summary(obs[fresh], module.forward_train({Columns.OBS: obs[fresh]}))
            metrics = {
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
                keys.BETA: state.beta,
            }
        return loss, metrics


def make_objective(find: FindSettings) -> Objective:
    """The objective ``--objective`` names."""
    return ClippedSurrogate() if find.objective == "ppo" else MassCovering(find.objective)
