"""``CalibrateRewards``: the learner-connector piece that turns rewards into FIND's calibrated advantages.

It replaces RLlib's ``GeneralAdvantageEstimation`` in PPO's learner pipeline (see ``FindPPOTorchLearner.build``):
FIND is a one-step MDP, so there is no bootstrapping to estimate; the advantage is the calibrated reward
``r - g(mu, sigma, c)`` from :class:`~find_rl.objectives.calibration.RewardCalibrator`, which this piece only feeds.

Preconditions: runs after ``NumpyToTensor`` on a batch ``{module_id: {column: tensor}}`` built from one-step
episodes, where ``AddOneTsToEpisodesAndTruncate`` added one masked row per episode (rows ``2i`` real,
``2i + 1`` artificial). Columns used: obs, rewards, action_dist_inputs (the behaviour policy's mu, log sigma),
loss_mask. It writes ``advantages`` and ``value_targets`` (the raw rewards, for RLlib's explained variance),
and masks out samples whose reward was invalid (NaN/inf, flagged ``valid=False`` by the env).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core.columns import Columns
from ray.rllib.evaluation.postprocessing import Postprocessing

from find_rl.objectives.calibration import RewardCalibrator, per_prompt_mean
from find_rl.core import keys
from find_rl.core.observation import ObservationLayout


class CalibrateRewards(ConnectorV2):
    def __init__(self, input_observation_space=None, input_action_space=None, *, calibrator: RewardCalibrator,
                 prompts: list[str], anchor=None, replay=None, render_replay=None, **kwargs):
        super().__init__(input_observation_space, input_action_space, **kwargs)
        self.replay = replay  # RewardedReplay or None; owned (and checkpointed) by the Learner
        self.render_replay = render_replay  # RenderReplay or None; owned (and checkpointed) by the Learner
        self.calibrator = calibrator  # owned (and checkpointed) by the Learner
        self.anchor = anchor  # AdaptiveAnchor or None; owned (and checkpointed) by the Learner
        self.prompts = list(prompts)

    def __call__(self, *, rl_module, batch: dict[str, Any], episodes, metrics=None, **kwargs):
        infos = [ep.get_infos(t + 1) or {} for ep in episodes for t in range(len(ep))]  # one per batch row
        for module_id, mb in batch.items():
            mask = mb[Columns.LOSS_MASK].bool()
            if len(infos) != len(mask):
                raise ValueError(f"CalibrateRewards: {len(infos)} episode steps but {len(mask)} batch rows; it must run on "
                                 "one-step episodes after AddOneTsToEpisodesAndTruncate, with one module")
            valid = torch.tensor([bool(i.get("valid", True)) for i in infos], device=mask.device)
            n_invalid = int((mask & ~valid).sum())
            mask = mask & valid
            rows = mask.nonzero().squeeze(-1)
            mb[Columns.LOSS_MASK] = mask
            if len(rows) == 0:  # every reward invalid: zero advantages, no refit
                mb[Postprocessing.ADVANTAGES] = torch.zeros_like(mb[Columns.REWARDS], dtype=torch.float32)
                mb[Postprocessing.VALUE_TARGETS] = mb[Columns.REWARDS].float()
                if metrics is not None:
                    metrics.log_dict({keys.SAMPLES_INVALID: n_invalid, keys.SAMPLES: 0}, key=(module_id, keys.FIND), window=1)
                continue
            num_prompts = len(self.prompts)
            obs = mb[Columns.OBS][rows]
            group = ObservationLayout(num_prompts).prompt_index(obs)
            rewards = mb[Columns.REWARDS][rows].float()
            dist_inputs = mb[Columns.ACTION_DIST_INPUTS][rows]
            if self.calibrator.baseline == "calibrated":  # g reads the behaviour as (mean, log std); the others read none
                dist_inputs = rl_module[module_id].unwrapped().calibration_inputs(obs, dist_inputs)
            result = self.calibrator.update(dist_inputs=dist_inputs, prompt_feat=obs, group=group, rewards=rewards)
            adv = torch.zeros_like(mb[Columns.REWARDS], dtype=torch.float32)
            adv[rows] = result.advantages.to(adv.device)
            mb[Postprocessing.ADVANTAGES] = adv
            mb[Postprocessing.VALUE_TARGETS] = mb[Columns.REWARDS].float()
            has_aligned = any("aligned" in infos[r] for r in rows.tolist())
            aligned = np.array([bool(infos[r].get("aligned", False)) for r in rows.tolist()])
            if self.replay is not None:  # rewarded = aligned where the reward says so, else above the prompt's batch mean
                rewarded = (torch.as_tensor(aligned) if has_aligned else
                            rewards.cpu() > torch.as_tensor(per_prompt_mean(rewards.cpu().numpy(), group.cpu().numpy(),
                                                                            num_prompts), dtype=torch.float32)[group.cpu()])
                self.replay.add(mb[Columns.ACTIONS][rows], mb[Columns.ACTION_LOGP][rows], obs, group.cpu(), rewarded)
            if self.render_replay is not None:  # staged now, joins the replay after this batch's update
                self.render_replay.stage(mb[Columns.ACTIONS][rows], mb[Columns.ACTION_LOGP][rows], obs, rewards, group)
            per = per_prompt_mean(aligned.astype(float), group.cpu().numpy(), num_prompts) if has_aligned else None
            if self.anchor is not None and per is not None:  # adapt each prompt's anchor weight to its alignment
                self.anchor.update(per)
            if metrics is not None:
                stats = {
                    keys.REWARD_MEAN: rewards.mean().item(),
                    keys.CALIB_PRED_MEAN: result.predicted.mean().item(),
                    keys.CALIB_ADV_MEAN: (rewards - result.predicted.to(rewards.device)).mean().item(),
                    keys.CALIB_FIT_MSE: result.fit_loss,
                    keys.ADVANTAGE_MEAN: result.advantages.mean().item(),
                    keys.ADVANTAGE_STD: result.advantages.std(unbiased=False).item(),
                    keys.SAMPLES_INVALID: n_invalid,
                    keys.SAMPLES: len(rows),
                }
                if self.anchor is not None:
                    stats[keys.ANCHOR_COEFF_MEAN] = float(self.anchor.coeffs.mean())
                if per is not None:
                    stats[keys.ALIGNMENT] = float(aligned.mean())
                    stats |= {keys.alignment_of(p): float(v) for p, v in zip(self.prompts, per) if np.isfinite(v)}
                metrics.log_dict(stats, key=(module_id, keys.FIND), window=1)
        return batch
