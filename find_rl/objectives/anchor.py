"""Per-prompt adaptive anchor: keep each prompt's distribution as close to N(0, I) as its alignment target allows.

FIND's plain objective keeps pushing a prompt's mean after the prompt is already aligned (a rare failure in a
batch of successes gets a large negative advantage), which collapses diversity. With a target alignment T,
each prompt c gets its own KL-anchor coefficient beta_c, adapted like PPO's adaptive KL coefficient or a dual
variable of the constraint "alignment_c >= T":

    beta_c <- clip(beta_c * factor,  lo, hi)   if this iteration's training-batch alignment of c >= T
    beta_c <- clip(beta_c / factor,  lo, hi)   otherwise

so a prompt that is comfortably aligned is pulled back toward the frozen model (regaining diversity) until it
sits at the target, and a prompt still below it is free to move. Pure torch/numpy, checkpointable.
"""

from __future__ import annotations

import numpy as np
import torch


class AdaptiveAnchor:
    def __init__(self, *, num_groups: int, target: float, init: float = 1e-3, factor: float = 1.5,
                 min_coeff: float = 1e-4, max_coeff: float = 1.0):
        if not 0.0 < target <= 1.0:
            raise ValueError(f"target alignment must be in (0, 1], got {target}")
        if factor <= 1.0:
            raise ValueError(f"anchor adaptation factor must be > 1, got {factor}")
        self.target, self.factor, self.min_coeff, self.max_coeff = target, factor, min_coeff, max_coeff
        self.coeffs = torch.full((num_groups,), float(np.clip(init, min_coeff, max_coeff)))

    def update(self, alignment: np.ndarray) -> None:
        """One step from this iteration's per-group alignment (NaN = group absent: unchanged)."""
        a = torch.as_tensor(np.asarray(alignment, dtype=np.float64), dtype=torch.float32)
        up = a >= self.target
        down = a < self.target  # NaN compares False both ways
        self.coeffs = torch.where(up, self.coeffs * self.factor, torch.where(down, self.coeffs / self.factor, self.coeffs))
        self.coeffs = self.coeffs.clamp(self.min_coeff, self.max_coeff)

    def get_state(self) -> dict:
        return {"coeffs": self.coeffs.clone()}

    def set_state(self, state: dict) -> None:
        self.coeffs = state["coeffs"].clone()
