"""The policy-family seam: what every noise policy's RLModule offers the learner, the connectors and the run.

A family is one ``TorchRLModule`` subclass of :class:`NoisePolicyRLModule` (the Gaussian per prompt and the amortised
Gaussian in :mod:`find_rl.rllib.noise_module`, the coupling flow in :mod:`find_rl.rllib.flow_module`), registered in
:data:`find_rl.rllib.families.FAMILIES` under its ``--policy-type``. The learner and the objectives call only this
protocol; no code outside a family's module asks which family it holds.

- ``model_config``: built from the typed :class:`~find_rl.core.settings.PolicySettings` (``policy``), the prompt count,
  the latent shape and the behaviour's prior share; each module reads its settings back from there, so no default is
  restated in a module.
- :meth:`NoisePolicyRLModule.noise_dist_cls`: the family's RLlib distribution class (RLlib's inference, exploration
  and train getters all return it; exploration with the behaviour's prior share).
- :meth:`NoisePolicyRLModule.log_density`: the joint log-density of actions under the module's RLlib **train
  distribution** (``get_train_action_dist_cls().from_logits(fwd_out[ACTION_DIST_INPUTS]).logp(actions)``), as RLlib's
  and SB3's losses compute it.
- :meth:`~NoisePolicyRLModule.summary`: per-row ``(mean, log std)`` of the distribution, what the reward calibrator's g
  reads and what the learner logs.
- :meth:`~NoisePolicyRLModule.regulariser`: the family's pull toward N(0, I) in FIND's clipped-surrogate objective.
- :meth:`~NoisePolicyRLModule.optimizer_param_groups` (None: RLlib's one Adam), :meth:`~NoisePolicyRLModule.project`
  (after each update), :meth:`~NoisePolicyRLModule.export` (the portable form, :mod:`find_rl.policies.export`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule
from ray.rllib.utils.annotations import override

from find_rl.core.observation import ObservationLayout
from find_rl.core.settings import FindSettings, PolicySettings


@dataclass
class RegulariserContext:
    """What a family's regulariser may read besides its own module: FIND's settings, the learner-owned state (the
    per-prompt adaptive anchor, the rewarded replay) and the batch's masked mean over valid rows."""

    find: FindSettings
    layout: ObservationLayout
    masked_mean: Callable[[torch.Tensor], torch.Tensor]
    mask: torch.Tensor
    adaptive_anchor: Any = None
    replay: Any = None


class NoisePolicyRLModule(TorchRLModule):
    """Base of every noise-policy family (see the module docstring)."""

    @classmethod
    def model_config_for(cls, policy: PolicySettings, *, num_prompts: int, latent_shape: tuple[int, ...],
                         prior_share: float = 0.0, token_shape: tuple[int, int] | None = None) -> dict:
        return dict(num_prompts=int(num_prompts), latent_shape=[int(v) for v in latent_shape], policy=policy.to_dict(),
                    prior_share=float(prior_share), token_shape=None if token_shape is None else [int(v) for v in token_shape])

    def _read_config(self) -> None:
        """``num_prompts``, ``latent_shape``, ``layout`` and ``policy`` (the typed settings) from ``model_config``."""
        cfg = self.model_config
        self.num_prompts = int(cfg["num_prompts"])
        self.layout = ObservationLayout(self.num_prompts)
        self.latent_shape = tuple(int(v) for v in cfg["latent_shape"])
        if math.prod(self.latent_shape) != self.action_space.shape[0]:
            raise ValueError(f"latent_shape {self.latent_shape} does not match the action size {self.action_space.shape[0]}")
        self.policy = PolicySettings(**cfg.get("policy", {}))
        self.prior_share = float(cfg.get("prior_share", 0.0))
        self.token_shape = tuple(cfg["token_shape"]) if cfg.get("token_shape") else None

    # ------------------------------------------------------------------------------------------------ the protocol
    #: whether the module reads the text embedding part of the observation (else only the prompt one-hot)
    reads_embedding: bool = False

    def log_density(self, obs: torch.Tensor, actions: torch.Tensor, fwd_out: dict | None = None) -> torch.Tensor:
        """Joint ``log pi(action | obs)``, ``(N,)``, through the RLlib train distribution (differentiable)."""
        if fwd_out is None:
            fwd_out = self._forward({Columns.OBS: obs})
        dist = self.get_train_action_dist_cls().from_logits(fwd_out[Columns.ACTION_DIST_INPUTS])
        return dist.logp(actions)

    def noise_dist_cls(self, prior_share: float = 0.0):
        """The family's RLlib distribution class, bound to this module; with ``prior_share`` > 0 the behaviour mixture
        ``(1 - s) q + s N(0, I)`` of the mass-covering objectives. RLlib's three getters below all come from it."""
        raise NotImplementedError

    @override(TorchRLModule)
    def get_inference_action_dist_cls(self):
        return self.noise_dist_cls()

    @override(TorchRLModule)
    def get_exploration_action_dist_cls(self):
        """What the env runner samples from: q, or the behaviour mixture with the module's ``prior_share``."""
        return self.noise_dist_cls(self.prior_share)

    @override(TorchRLModule)
    def get_train_action_dist_cls(self):
        return self.noise_dist_cls()

    def summary(self, obs: torch.Tensor, fwd_out: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-row ``(mean, log std)``, each ``(N, D)``, of the distribution at ``obs``."""
        raise NotImplementedError

    def calibration_inputs(self, obs: torch.Tensor, dist_inputs: torch.Tensor) -> torch.Tensor:
        """What the reward calibrator's g reads for the behaviour that drew these rows: ``cat([mean, log std], -1)``."""
        raise NotImplementedError

    def regulariser(self, obs: torch.Tensor, fwd_out: dict, ctx: RegulariserContext) -> tuple[torch.Tensor, torch.Tensor]:
        """``(divergence from N(0, I), its weighted value in the loss)`` for FIND's clipped-surrogate objective."""
        raise NotImplementedError

    def optimizer_param_groups(self) -> list[tuple[str, list[torch.nn.Parameter], float]] | None:
        """``[(name, parameters, lr multiplier)]``, or None for RLlib's single optimiser at ``lr``."""
        return None

    def seeding(self) -> tuple[float, int]:
        """``(share, draws)``: the share of the run's iterations this module only draws (at least one when > 0), and how
        many of each prompt's aligned draws the learner keeps for :meth:`seed` (``(0, 0)``: no seeding; no gradient
        step while it lasts)."""
        return 0.0, 0

    def seed(self, noises: list[torch.Tensor | None]) -> None:
        """Place the distributions on the aligned draws collected while seeding, per prompt ``(n, D)`` or None."""
        raise NotImplementedError(f"{type(self).__name__} does not seed")

    @torch.no_grad()
    def project(self) -> None:
        """Put the parameters back onto their constraints after an update (default: none)."""

    def export(self, obs: torch.Tensor, **meta):
        """The learned distributions for observation rows ``obs`` (trained prompts, then held-out ones) in the portable
        form of :mod:`find_rl.policies.export`; ``meta`` is its metadata (prompts, model, sampler, training)."""
        raise NotImplementedError
