"""``FindSettings``: FIND's own hyperparameters (beyond RLlib's PPO ones), typed, validated, serialisable.

They travel to the Learner inside ``config.learners(learner_config_dict=...)`` as a plain dict.
RLlib's names are kept for RLlib's knobs (``clip_param``, ``lr``, ``num_epochs``, ``minibatch_size``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


@dataclass
class FindSettings:
    prompts: list[str] = field(default_factory=list)  # the env's prompt list (metric names, exports)
    surrogate: str = "ppo"  # "ppo": min(unclipped, clipped); "clamp": the released code's clamp-only loss
    anchor: str = "kl"  # pull toward N(0, I): "kl" (analytic Gaussian KL), "l2" (the paper's stand-in), "none"
    anchor_coeff: float = 0.0  # weight of the anchor term (per-element mean)
    calibration: bool = True  # dynamic reward calibration r - g(mu, sigma, c); False = ablation
    calibration_normalize: str = "prompt"  # divide r* by the per-prompt ("prompt") or batch std, or "none"
    calibration_lr: float = 1e-2
    calibration_steps: int = 50
    calibration_history: int = 4
    calibration_hidden: int = 64

    def __post_init__(self):
        if self.surrogate not in ("ppo", "clamp"):
            raise ValueError(f"surrogate must be 'ppo' or 'clamp', got {self.surrogate!r}")
        if self.anchor not in ("kl", "l2", "none"):
            raise ValueError(f"anchor must be 'kl', 'l2' or 'none', got {self.anchor!r}")
        if self.anchor_coeff < 0:
            raise ValueError(f"anchor_coeff must be >= 0, got {self.anchor_coeff}")
        if self.calibration_steps < 0 or self.calibration_history < 1:
            raise ValueError("calibration_steps must be >= 0 and calibration_history >= 1")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FindSettings":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
