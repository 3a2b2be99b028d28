"""Dynamic reward calibration (FIND's DRCM) and the baselines it is compared with, free of Ray.

A reward predictor ``g(mu, sigma, c)`` estimates the expected reward of the *current* distribution
N(mu_c, sigma_c^2) for prompt c. The distribution moves every iteration, so g is refit every iteration, and the
policy is trained on the calibrated reward ``r* = r - g(mu, sigma, c)``: a learned, distribution-aware baseline.
``baseline`` picks b in ``r* = r - b`` (issue 14: is it g that helps, or any baseline?):

    "calibrated"  b = g(mu, sigma, c), refit on this batch (+ history) first       (default; FIND's DRCM)
    "mean"        b = the mean reward of the sample's group in this batch
    "ema"         b = an exponential moving average of the group's past batch means, updated *after* the
                  advantages: b_t = m b_{t-1} + (1 - m) rbar_{t-1} (m = ``ema_momentum``); a group's first batch
                  uses its batch mean (and starts the average there)
    "none"        b = 0 (the no-baseline ablation; ``enabled=False`` is an alias)

Notation (code name -> paper):
    dist_inputs -> (mu, log sigma) of the behaviour policy that drew each sample (detached), ``(N, 2D)``
    prompt_feat -> the prompt's features c (one-hot index and text embedding), ``(N, F)``
    group       -> which distribution drew each sample (the prompt index), ``(N,)``
    rbar        -> a group's mean reward in this batch (its samples share mu, sigma and c)
    g(...)      -> the predicted expected reward E[r | mu, sigma, c] of that distribution (the paper's r_bar)
    b           -> the baseline of each sample (``CalibrationResult.predicted``)
    r - b       -> r*, the calibrated reward; each reward stays paired with the sample that earned it

One update (``update``):
1. Aggregate the batch per group: its input row, its mean reward rbar and its sample count.
2. Baseline. "calibrated": append the rows to a short history of the last ``history`` iterations (older
   distributions still teach g how reward depends on (mu, sigma)), fit g for ``steps`` Adam steps on the
   count-weighted MSE over that history (L_g), and take b = g(x) with the refit g. "mean" / "ema" / "none": b per
   group as above; then, for "ema", fold this batch's rbar into the average.
3. Return ``r* = r - b`` for every sample, optionally divided by the per-prompt standard deviation of this batch's
   rewards (``normalize="prompt"``) or the whole batch's (``"batch"``), floored at ``eps`` (in reward units) so
   that a prompt whose samples all score alike is not amplified by more than 1/eps.

Why the EMA is updated after the advantages: then b depends only on earlier batches, so it is a prediction
(independent of the sample it is subtracted from: an unbiased policy gradient) and the rung between "mean" (this
batch) and g. Updated before, it would be m b + (1 - m) rbar, partly the batch mean. Note that "calibrated" is *not*
such a pure prediction: g is refit on this batch before predicting it, so the better g fits, the closer b gets to
rbar, and with ``history=1`` and enough ``steps`` "calibrated" tends to "mean".

At one sample per group per batch (the released code's setting) rbar is that sample's own reward:
    "mean"        r* = 0 exactly, for every sample: no policy-gradient signal at all (only an anchor acts).
    "ema"         r* = r - (average of the group's earlier rewards); 0 on a group's first batch.
    "calibrated"  r* = r - g(x), with g just refit on this reward among its history: shrunk toward 0.
    "none"        r* = r.
    ``normalize="prompt"`` has no per-prompt spread to divide by (std 0), so r* is divided by the floor ``eps``
    (x 20 at 0.05) for every baseline: finite, and a uniform scale that Adam largely absorbs, but groups with one
    sample and groups with several are then weighted inconsistently; prefer "batch" or "none" there. A batch of a
    single sample is left unscaled by ``"batch"``. No baseline or normalisation divides by zero.

Long latents are average-pooled to at most ``max_features`` numbers per parameter tensor before entering g.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from find_rl.core.settings import BASELINES  # declared with the --baseline flag


class RewardPredictor(nn.Module):
    """g: MLP over [pooled mu, pooled log sigma, prompt features] -> predicted expected reward."""

    def __init__(self, *, latent_shape: tuple[int, ...], prompt_dim: int, hidden: int = 64, max_features: int = 1024):
        super().__init__()
        self.latent_shape = tuple(latent_shape)
        self.pool_to = _pooled_hw(self.latent_shape, max_features)
        n_feat = math.prod(self.latent_shape[:-2]) * self.pool_to[0] * self.pool_to[1] if self.pool_to else math.prod(self.latent_shape)
        self.net = nn.Sequential(nn.Linear(2 * n_feat + prompt_dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def features(self, dist_inputs: torch.Tensor, prompt_feat: torch.Tensor) -> torch.Tensor:
        mu, log_std = dist_inputs.chunk(2, dim=-1)
        parts = []
        for t in (mu, log_std):
            if self.pool_to:
                t = F.adaptive_avg_pool2d(t.reshape(len(t), -1, *self.latent_shape[-2:]), self.pool_to).flatten(1)
            parts.append(t)
        return torch.cat([*parts, prompt_feat], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def _pooled_hw(latent_shape: tuple[int, ...], max_features: int) -> tuple[int, int] | None:
    if math.prod(latent_shape) <= max_features or len(latent_shape) < 3:
        return None
    c, h, w = latent_shape[0] * math.prod(latent_shape[1:-2]), latent_shape[-2], latent_shape[-1]
    side = max(1, int(math.sqrt(max_features / c)))
    return (min(side, h), min(side, w))


@dataclass
class CalibrationResult:
    advantages: torch.Tensor  # (N,) calibrated (and normalised) rewards r - b
    predicted: torch.Tensor  # (N,) the baseline b of each sample (g's prediction for "calibrated", 0 for "none")
    fit_loss: float  # "calibrated": g's weighted MSE on its history after the refit; otherwise the count-weighted
    #                  MSE of b against each group's batch mean rbar (0 for "mean", the prediction error for "ema")


class RewardCalibrator:
    """Owns the baseline's state: g, its optimiser and its short history, and the per-group EMA.
    Checkpointable through ``get_state``/``set_state``.

    :param baseline: "calibrated" (default), "mean", "ema" or "none" (module docstring).
    :param enabled: the older switch, kept as an alias: False means ``baseline="none"``, True any other baseline
        (the default "calibrated" when ``baseline`` is not given); a contradiction raises.
    :param ema_momentum: m of the "ema" baseline, in [0, 1): about 1 / (1 - m) batches are averaged (10 at the
        default 0.9, a half-life of 6.6 iterations), short enough to follow a moving policy; 0 = the previous batch.
    """

    def __init__(
        self,
        *,
        latent_shape: tuple[int, ...],
        prompt_dim: int,
        baseline: str | None = None,
        enabled: bool | None = None,
        normalize: str = "prompt",
        hidden: int = 64,
        lr: float = 1e-2,
        steps: int = 50,
        history: int = 4,
        eps: float = 0.05,
        ema_momentum: float = 0.9,
        device: str | torch.device = "cpu",
    ):
        if normalize not in ("prompt", "batch", "none"):
            raise ValueError(f"normalize must be 'prompt', 'batch' or 'none', got {normalize!r}")
        if not 0 <= ema_momentum < 1:
            raise ValueError(f"ema_momentum must be in [0, 1), got {ema_momentum!r}")
        self.baseline = _resolve_baseline(baseline, enabled)
        self.normalize, self.steps, self.history, self.eps, self.ema_momentum = normalize, steps, history, eps, ema_momentum
        self.g = RewardPredictor(latent_shape=latent_shape, prompt_dim=prompt_dim, hidden=hidden).to(device)
        self.optimizer = torch.optim.Adam(self.g.parameters(), lr=lr)
        self._buffer: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (x, mean reward, count)
        self._ema: dict[int, float] = {}  # group -> running mean of its past batch means (float64)
        self.device = torch.device(device)

    @property
    def enabled(self) -> bool:
        """The older switch: whether any baseline is subtracted."""
        return self.baseline != "none"

    def update(
        self, *, dist_inputs: torch.Tensor, prompt_feat: torch.Tensor, group: torch.Tensor, rewards: torch.Tensor
    ) -> CalibrationResult:
        """Compute this batch's baseline (refitting g / folding in the EMA) and return its calibrated rewards.

        ``group`` (N,) identifies samples drawn from the same distribution (the prompt index for per-prompt
        policies); it aggregates g's training rows, defines "mean" and "ema", and the per-prompt normalisation.
        "ema" needs the same group index for the same prompt in every batch.
        """
        rewards, group = rewards.detach().to(self.device, torch.float32), group.to(self.device)
        groups, inverse = torch.unique(group, return_inverse=True)
        counts = torch.bincount(inverse, minlength=len(groups)).float()
        mean_r = torch.zeros(len(groups), device=self.device).index_add_(0, inverse, rewards) / counts
        if self.baseline == "calibrated":
            predicted, fit_loss = self._refit_and_predict(dist_inputs, prompt_feat, inverse, mean_r, counts)
        else:
            b = self._group_baseline(groups, mean_r)
            predicted = b[inverse]
            fit_loss = float((counts / counts.sum() * (b - mean_r) ** 2).sum())
            if self.baseline == "ema":  # after the advantages: b stays a prediction from earlier batches
                m = self.ema_momentum
                for k, v in zip(groups.tolist(), mean_r.tolist()):
                    self._ema[k] = m * self._ema[k] + (1 - m) * v if k in self._ema else v
        adv = rewards - predicted
        if self.normalize == "prompt":
            var = torch.zeros(len(groups), device=self.device).index_add_(0, inverse, (rewards - mean_r[inverse]) ** 2)
            std = (var / (counts - 1).clamp(min=1)).sqrt()
            adv = adv / std[inverse].clamp(min=self.eps)
        elif self.normalize == "batch":
            adv = adv / rewards.std().clamp(min=self.eps) if len(rewards) > 1 else adv
        return CalibrationResult(advantages=adv, predicted=predicted, fit_loss=fit_loss)

    def _group_baseline(self, groups: torch.Tensor, mean_r: torch.Tensor) -> torch.Tensor:
        """b per group for the baselines without g: "mean", "ema" (a first-seen group gets its batch mean), "none"."""
        if self.baseline == "none":
            return torch.zeros_like(mean_r)
        if self.baseline == "mean":
            return mean_r
        return torch.tensor([self._ema.get(k, v) for k, v in zip(groups.tolist(), mean_r.tolist())],
                            dtype=torch.float32, device=self.device)

    def _refit_and_predict(self, dist_inputs, prompt_feat, inverse, mean_r, counts) -> tuple[torch.Tensor, float]:
        """Append this batch's rows to g's history, refit g, and return (g(x) per sample, the fit's loss)."""
        dist_inputs, prompt_feat = dist_inputs.detach().to(self.device), prompt_feat.detach().to(self.device)
        x = self.g.features(dist_inputs, prompt_feat).detach()
        first = torch.zeros(len(mean_r), dtype=torch.long, device=self.device).scatter_reduce_(
            0, inverse, torch.arange(len(inverse), device=self.device), reduce="amax", include_self=False
        )  # one row per group: its samples share (mu, sigma, c)
        self._buffer = (self._buffer + [(x[first], mean_r, counts)])[-self.history :]
        bx = torch.cat([b[0] for b in self._buffer])
        by = torch.cat([b[1] for b in self._buffer])
        bw = torch.cat([b[2] for b in self._buffer])
        bw = bw / bw.sum()
        for _ in range(self.steps):
            loss = (bw * (self.g(bx) - by) ** 2).sum()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        with torch.no_grad():
            return self.g(x), float((bw * (self.g(bx) - by) ** 2).sum())

    def get_state(self) -> dict:
        keys = sorted(self._ema)
        return {
            "g": {k: v.detach().cpu().clone() for k, v in self.g.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "buffer": [tuple(t.cpu().clone() for t in b) for b in self._buffer],
            "ema": {"groups": torch.tensor(keys, dtype=torch.long),
                    "values": torch.tensor([self._ema[k] for k in keys], dtype=torch.float64)},
        }

    def set_state(self, state: dict) -> None:
        self.g.load_state_dict(state["g"])
        self.optimizer.load_state_dict(state["optimizer"])
        self._buffer = [tuple(t.to(self.device) for t in b) for b in state["buffer"]]
        ema = state.get("ema")  # absent in checkpoints from before the "ema" baseline
        self._ema = dict(zip(ema["groups"].tolist(), ema["values"].tolist())) if ema is not None else {}


def _resolve_baseline(baseline: str | None, enabled: bool | None) -> str:
    """The baseline from ``baseline`` and the older ``enabled`` alias."""
    if baseline is None:
        return "none" if enabled is False else "calibrated"
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {', '.join(BASELINES)}, got {baseline!r}")
    if enabled is not None and bool(enabled) != (baseline != "none"):
        raise ValueError(f"enabled={enabled} contradicts baseline={baseline!r}; pass baseline alone")
    return baseline


def per_prompt_mean(values: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """Mean of ``values`` per group index (NaN for empty groups)."""
    sums = np.bincount(group, weights=values, minlength=n_groups)
    counts = np.bincount(group, minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts
