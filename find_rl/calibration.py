"""Dynamic reward calibration (FIND's DRCM), free of Ray.

A reward predictor ``g(mu, sigma, c)`` estimates the expected reward of the *current* distribution
N(mu_c, sigma_c^2) for prompt c. The distribution moves every iteration, so g is refit every iteration, and the
policy is trained on the calibrated reward ``r* = r - g(mu, sigma, c)``: a learned, distribution-aware baseline.

Notation (code name -> paper):
    dist_inputs -> (mu, log sigma) of the behaviour policy that drew each sample (detached), ``(N, 2D)``
    prompt_feat -> the prompt's features c (one-hot index and text embedding), ``(N, F)``
    g(...)      -> r_bar, the predicted expected reward of that distribution
    r - g       -> r*, the calibrated reward; each reward stays paired with the sample that earned it

One refit (``update``):
1. Aggregate the batch per distinct distribution (all samples of one prompt share mu, sigma): its input row
   and its mean reward, weighted by the sample count. Append to a short history of the last ``history``
   iterations (older distributions still teach g how reward depends on (mu, sigma)).
2. Fit g for ``steps`` Adam steps on the weighted MSE over that history (L_g).
3. Return ``r* = r - g(x)`` for every sample of the batch, computed with the refit g, and optionally divided by
   the per-prompt standard deviation of this batch's rewards (``normalize="prompt"``) or the whole batch's,
   floored at ``eps`` (in reward units) so that a prompt whose samples all score alike is not amplified.

With ``enabled=False`` (the ablation) g is not used: ``r* = r`` (still normalised if asked).
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
    advantages: torch.Tensor  # (N,) calibrated (and normalised) rewards
    predicted: torch.Tensor  # (N,) g's prediction for each sample's distribution
    fit_loss: float  # weighted MSE of g on its history after the refit


class RewardCalibrator:
    """Owns g, its optimiser and its short history; checkpointable through ``get_state``/``set_state``."""

    def __init__(
        self,
        *,
        latent_shape: tuple[int, ...],
        prompt_dim: int,
        enabled: bool = True,
        normalize: str = "prompt",
        hidden: int = 64,
        lr: float = 1e-2,
        steps: int = 50,
        history: int = 4,
        eps: float = 0.05,
        device: str | torch.device = "cpu",
    ):
        if normalize not in ("prompt", "batch", "none"):
            raise ValueError(f"normalize must be 'prompt', 'batch' or 'none', got {normalize!r}")
        self.enabled, self.normalize, self.steps, self.history, self.eps = enabled, normalize, steps, history, eps
        self.g = RewardPredictor(latent_shape=latent_shape, prompt_dim=prompt_dim, hidden=hidden).to(device)
        self.optimizer = torch.optim.Adam(self.g.parameters(), lr=lr)
        self._buffer: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (x, mean reward, count)
        self.device = torch.device(device)

    def update(
        self, *, dist_inputs: torch.Tensor, prompt_feat: torch.Tensor, group: torch.Tensor, rewards: torch.Tensor
    ) -> CalibrationResult:
        """Refit g on this batch (+ history) and return the calibrated rewards of this batch.

        ``group`` (N,) identifies samples drawn from the same distribution (the prompt index for per-prompt
        policies); it is used to aggregate g's training rows and for per-prompt normalisation.
        """
        dist_inputs, prompt_feat = dist_inputs.detach().to(self.device), prompt_feat.detach().to(self.device)
        rewards, group = rewards.detach().to(self.device, torch.float32), group.to(self.device)
        x = self.g.features(dist_inputs, prompt_feat).detach()
        groups, inverse = torch.unique(group, return_inverse=True)
        counts = torch.bincount(inverse, minlength=len(groups)).float()
        mean_r = torch.zeros(len(groups), device=self.device).index_add_(0, inverse, rewards) / counts
        first = torch.zeros(len(groups), dtype=torch.long, device=self.device).scatter_reduce_(
            0, inverse, torch.arange(len(group), device=self.device), reduce="amax", include_self=False
        )  # one row per group: its samples share (mu, sigma, c)
        fit_loss = float("nan")
        if self.enabled:
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
                fit_loss = float((bw * (self.g(bx) - by) ** 2).sum())
                predicted = self.g(x)
        else:
            predicted = torch.zeros_like(rewards)
        adv = rewards - predicted
        if self.normalize == "prompt":
            var = torch.zeros(len(groups), device=self.device).index_add_(0, inverse, (rewards - mean_r[inverse]) ** 2)
            std = (var / (counts - 1).clamp(min=1)).sqrt()
            adv = adv / std[inverse].clamp(min=self.eps)
        elif self.normalize == "batch":
            adv = adv / rewards.std().clamp(min=self.eps) if len(rewards) > 1 else adv
        return CalibrationResult(advantages=adv, predicted=predicted, fit_loss=fit_loss)

    def get_state(self) -> dict:
        return {
            "g": {k: v.detach().cpu().clone() for k, v in self.g.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "buffer": [tuple(t.cpu().clone() for t in b) for b in self._buffer],
        }

    def set_state(self, state: dict) -> None:
        self.g.load_state_dict(state["g"])
        self.optimizer.load_state_dict(state["optimizer"])
        self._buffer = [tuple(t.to(self.device) for t in b) for b in state["buffer"]]


def per_prompt_mean(values: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """Mean of ``values`` per group index (NaN for empty groups)."""
    sums = np.bincount(group, weights=values, minlength=n_groups)
    counts = np.bincount(group, minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts
