"""The learner-connector pieces that replace RLlib's ``GeneralAdvantageEstimation`` in PPO's learner pipeline (see
``FindPPOTorchLearner.build``), one job each, in this order (:func:`reward_pieces`):

1. :class:`MaskInvalidRewards`: samples whose reward was NaN/inf (flagged ``valid=False`` by the env) leave the loss mask;
2. :class:`CalibrateRewards`: FIND is a one-step MDP, so there is no bootstrapping to estimate; the advantage is the
   calibrated reward ``r - g(mu, sigma, c)`` from :class:`~find_rl.objectives.calibration.RewardCalibrator` (or the
   batch mean, a running mean, none), which this piece feeds; it writes ``advantages`` and ``value_targets`` (the raw
   rewards, for RLlib's explained variance and the mass-covering objectives);
3. :class:`FeedReplays`: the flow's rewarded-noise replay, the seeded mixture's aligned draws and the render replay
   take this batch's valid rows;
4. :class:`TrackAlignment`: each prompt's aligned rate adapts its anchor weight (``--target-alignment``) and is logged.

Preconditions: they run after ``NumpyToTensor`` on a batch ``{module_id: {column: tensor}}`` built from one-step
episodes, where ``AddOneTsToEpisodesAndTruncate`` added one masked row per episode (rows ``2i`` real, ``2i + 1``
artificial). Columns used: obs, rewards, actions, action_logp, action_dist_inputs (the behaviour's), loss_mask.
The state they feed (calibrator, replays, anchor) is owned and checkpointed by the Learner.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core.columns import Columns
from ray.rllib.evaluation.postprocessing import Postprocessing

from find_rl.core import keys
from find_rl.core.observation import ObservationLayout
from find_rl.objectives.calibration import RewardCalibrator, per_prompt_mean


def _infos(episodes, rows: int) -> list[dict]:
    """One env ``info`` per batch row (the artificial rows get the next step's, which is empty)."""
    infos = [ep.get_infos(t + 1) or {} for ep in episodes for t in range(len(ep))]
    if len(infos) != rows:
        raise ValueError(f"the FIND reward connectors: {len(infos)} episode steps but {rows} batch rows; they must run on "
                         "one-step episodes after AddOneTsToEpisodesAndTruncate, with one module")
    return infos


class _Piece(ConnectorV2):
    def __init__(self, input_observation_space=None, input_action_space=None, *, prompts: list[str], **kwargs):
        super().__init__(input_observation_space, input_action_space, **kwargs)
        self.prompts = list(prompts)
        self.layout = ObservationLayout(len(self.prompts))

    def _valid_rows(self, mb) -> torch.Tensor:
        return mb[Columns.LOSS_MASK].bool().nonzero().squeeze(-1)


class MaskInvalidRewards(_Piece):
    """Drop the rows whose reward the env flagged invalid from the loss mask; count them."""

    def __call__(self, *, rl_module, batch: dict[str, Any], episodes, metrics=None, **kwargs):
        for module_id, mb in batch.items():
            mask = mb[Columns.LOSS_MASK].bool()
            infos = _infos(episodes, len(mask))
            valid = torch.tensor([bool(i.get("valid", True)) for i in infos], device=mask.device)
            mb[Columns.LOSS_MASK] = mask & valid
            if metrics is not None:
                metrics.log_dict({keys.SAMPLES_INVALID: int((mask & ~valid).sum())}, key=(module_id, keys.FIND), window=1)
        return batch


class CalibrateRewards(_Piece):
    """Advantages = calibrated rewards of the valid rows (0 elsewhere); value targets = the raw rewards."""

    def __init__(self, input_observation_space=None, input_action_space=None, *, calibrator: RewardCalibrator, **kwargs):
        super().__init__(input_observation_space, input_action_space, **kwargs)
        self.calibrator = calibrator

    def __call__(self, *, rl_module, batch: dict[str, Any], episodes, metrics=None, **kwargs):
        for module_id, mb in batch.items():
            rows = self._valid_rows(mb)
            mb[Postprocessing.VALUE_TARGETS] = mb[Columns.REWARDS].float()
            adv = torch.zeros_like(mb[Columns.REWARDS], dtype=torch.float32)
            if len(rows) == 0:  # every reward invalid: zero advantages, no refit
                mb[Postprocessing.ADVANTAGES] = adv
                if metrics is not None:
                    metrics.log_dict({keys.SAMPLES: 0}, key=(module_id, keys.FIND), window=1)
                continue
            obs = mb[Columns.OBS][rows]
            group = self.layout.prompt_index(obs)
            rewards = mb[Columns.REWARDS][rows].float()
            dist_inputs = mb[Columns.ACTION_DIST_INPUTS][rows]
            if self.calibrator.baseline == "calibrated":  # g reads the behaviour as (mean, log std); the others read none
                dist_inputs = rl_module[module_id].unwrapped().calibration_inputs(obs, dist_inputs)
            result = self.calibrator.update(dist_inputs=dist_inputs, prompt_feat=obs, group=group, rewards=rewards)
            adv[rows] = result.advantages.to(adv.device)
            mb[Postprocessing.ADVANTAGES] = adv
            if metrics is not None:
                metrics.log_dict({
                    keys.REWARD_MEAN: rewards.mean().item(),
                    keys.CALIB_PRED_MEAN: result.predicted.mean().item(),
                    keys.CALIB_ADV_MEAN: (rewards - result.predicted.to(rewards.device)).mean().item(),
                    keys.CALIB_FIT_MSE: result.fit_loss,
                    keys.ADVANTAGE_MEAN: result.advantages.mean().item(),
                    keys.ADVANTAGE_STD: result.advantages.std(unbiased=False).item(),
                    keys.SAMPLES: len(rows),
                }, key=(module_id, keys.FIND), window=1)
        return batch


class FeedReplays(_Piece):
    """The rewarded-noise replay (``--replay-coeff``), the seeded mixture's store of aligned draws while it seeds
    (``--mixture-seed-share``) and the render replay (``--render-replay``) take the valid rows; "rewarded" =
    aligned where the reward says so, else above the prompt's batch mean."""

    def __init__(self, input_observation_space=None, input_action_space=None, *, replay=None, render_replay=None,
                 seeds=None, **kwargs):
        super().__init__(input_observation_space, input_action_space, **kwargs)
        self.replay, self.render_replay, self.seeds = replay, render_replay, seeds

    def __call__(self, *, rl_module, batch: dict[str, Any], episodes, metrics=None, **kwargs):
        for module_id, mb in batch.items():
            rows = self._valid_rows(mb)
            if len(rows) == 0:
                continue
            obs = mb[Columns.OBS][rows]
            group = self.layout.prompt_index(obs)
            rewards = mb[Columns.REWARDS][rows].float()
            stores = [r for r in (self.replay, self.seeds) if r is not None and not r.closed]
            if stores:
                infos = _infos(episodes, len(mb[Columns.LOSS_MASK]))
                if any("aligned" in infos[r] for r in rows.tolist()):
                    rewarded = torch.as_tensor(np.array([bool(infos[r].get("aligned", False)) for r in rows.tolist()]))
                else:
                    means = per_prompt_mean(rewards.cpu().numpy(), group.cpu().numpy(), len(self.prompts))
                    rewarded = rewards.cpu() > torch.as_tensor(means, dtype=torch.float32)[group.cpu()]
                for store in stores:
                    store.add(mb[Columns.ACTIONS][rows], mb[Columns.ACTION_LOGP][rows], obs, group.cpu(), rewarded)
            if self.render_replay is not None:  # staged now, joins the replay after this batch's update
                self.render_replay.stage(mb[Columns.ACTIONS][rows], mb[Columns.ACTION_LOGP][rows], obs, rewards, group)
        return batch


class TrackAlignment(_Piece):
    """Each prompt's aligned rate on this batch (where the reward reports ``aligned``): logged, and it adapts the
    per-prompt anchor weight (``--target-alignment``)."""

    def __init__(self, input_observation_space=None, input_action_space=None, *, anchor=None, **kwargs):
        super().__init__(input_observation_space, input_action_space, **kwargs)
        self.anchor = anchor

    def __call__(self, *, rl_module, batch: dict[str, Any], episodes, metrics=None, **kwargs):
        for module_id, mb in batch.items():
            rows = self._valid_rows(mb)
            infos = _infos(episodes, len(mb[Columns.LOSS_MASK]))
            if len(rows) == 0 or not any("aligned" in infos[r] for r in rows.tolist()):
                continue
            group = self.layout.prompt_index(mb[Columns.OBS][rows]).cpu().numpy()
            aligned = np.array([bool(infos[r].get("aligned", False)) for r in rows.tolist()])
            per = per_prompt_mean(aligned.astype(float), group, len(self.prompts))
            if self.anchor is not None:
                self.anchor.update(per)
            if metrics is not None:
                stats = {keys.ALIGNMENT: float(aligned.mean())}
                if np.isfinite(per).all():  # every prompt in the batch (not a subset drawn from many: their
                    # metrics would outlive the iteration in RLlib's logger and mix iterations)
                    stats |= {keys.alignment_of(p): float(v) for p, v in zip(self.prompts, per)}
                if self.anchor is not None:
                    stats[keys.ANCHOR_COEFF_MEAN] = float(self.anchor.coeffs.mean())
                metrics.log_dict(stats, key=(module_id, keys.FIND), window=1)
        return batch


def reward_pieces(*, calibrator: RewardCalibrator, prompts: list[str], anchor=None, replay=None,
                  render_replay=None, seeds=None) -> list[ConnectorV2]:
    """The pieces in their order (each reads what the one before wrote)."""
    return [MaskInvalidRewards(prompts=prompts), CalibrateRewards(calibrator=calibrator, prompts=prompts),
            FeedReplays(prompts=prompts, replay=replay, render_replay=render_replay, seeds=seeds),
            TrackAlignment(prompts=prompts, anchor=anchor)]
