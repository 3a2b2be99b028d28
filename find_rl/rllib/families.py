"""The noise-policy families by ``--policy-type``: each is one :class:`~find_rl.rllib.noise_policy.NoisePolicyRLModule`
subclass, and :func:`module_spec` is the one place a family's RLModule is chosen and configured."""

from __future__ import annotations

from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from find_rl.core.settings import POLICY_TYPES, PolicySettings
from find_rl.rllib.flow_module import FlowNoisePolicyModule
from find_rl.rllib.mixture_module import MixtureNoisePolicyModule
from find_rl.rllib.noise_module import AmortizedNoisePolicyModule, NoisePolicyModule
from find_rl.rllib.noise_policy import NoisePolicyRLModule

FAMILIES: dict[str, type[NoisePolicyRLModule]] = {
    "per-prompt": NoisePolicyModule,
    "amortized": AmortizedNoisePolicyModule,
    "flow": FlowNoisePolicyModule,
    "mixture": MixtureNoisePolicyModule,
}
assert tuple(FAMILIES) == POLICY_TYPES, "every --policy-type has its module"


def module_spec(policy: PolicySettings, *, num_prompts: int, latent_shape: tuple[int, ...],
                prior_share: float = 0.0, token_shape: tuple[int, int] | None = None) -> RLModuleSpec:
    """The family's RLModule, configured from the typed settings (``prior_share``: the behaviour's share of N(0, I)
    draws, the mass-covering objectives' mixture)."""
    cls = FAMILIES[policy.policy_type]
    return RLModuleSpec(module_class=cls, model_config=cls.model_config_for(
        policy, num_prompts=num_prompts, latent_shape=latent_shape, prior_share=prior_share, token_shape=token_shape))
