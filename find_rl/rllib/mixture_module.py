"""``MixtureNoisePolicyModule``: a uniform mixture of K Gaussians per prompt (:mod:`find_rl.policies.mixture`) as an
RLlib ``TorchRLModule``, with ``TorchGaussianMixture``, an RLlib ``TorchDistribution`` over
``torch.distributions.MixtureSameFamily``.

``ACTION_DIST_INPUTS`` are ``cat([means.flatten(1), log_std, log_weights])``: K x D component means, the shared
per-element log std (D), then the K log weights (log 1/K when the weights are fixed), so the env runner's recorded ``ACTION_LOGP`` is the mixture's exact joint log-density and the learner's
``logp`` is differentiable in every component. The distribution class is bound to K through RLlib's
``get_partial_dist_cls(components=K)``. Everything else (the clipped surrogate, the baselines, the mass-covering
objectives, the checkpoints) is the family-free learner's.
"""

from __future__ import annotations

import math

import gymnasium as gym
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchDistribution
from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule
from ray.rllib.utils.annotations import override
from torch import nn

from find_rl.objectives.mass_covering import log_prior, mix_in_prior, mixture_log_prob
from find_rl.policies import latent_mean
from find_rl.policies import mixture as mx
from find_rl.rllib.noise_module import GaussianNoiseModule, PerPromptSigmaModule
from find_rl.rllib.noise_policy import NoisePolicyRLModule


def split_mixture_inputs(logits: torch.Tensor, components: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(N, (K + 1) D + K)`` -> ``(means (N, K, D), log_std (N, D), weights (N, K))``."""
    k = int(components)
    dim = (logits.shape[-1] - k) // (k + 1)
    means = logits[..., : k * dim].reshape(*logits.shape[:-1], k, dim)
    return means, logits[..., k * dim : (k + 1) * dim], logits[..., (k + 1) * dim :].exp()


class TorchGaussianMixture(TorchDistribution):
    """RLlib distribution: sum_k w_k N(mu_k, sigma^2) per row, from ``cat([means.flatten(1), log_std, log_weights])``.

    ``prior_share`` s > 0 makes it the behaviour mixture (1 - s) q + s N(0, I) of the mass-covering objectives, with its
    exact density as ``logp`` (as the Gaussian's and the flow's behaviour distributions). ``to_deterministic`` draws
    the heaviest component's mean (RLlib's inference path, which FIND does not use for training).
    """

    def __init__(self, logits: torch.Tensor, components: int, prior_share: float = 0.0, deterministic: bool = False):
        self.logits, self.components = logits, int(components)
        self.prior_share, self.deterministic = float(prior_share), bool(deterministic)
        super().__init__(logits=logits, components=components)

    @override(TorchDistribution)
    def _get_torch_distribution(self, logits: torch.Tensor, components: int):
        return mx.torch_mixture(*split_mixture_inputs(logits, components))

    @override(TorchDistribution)
    def sample(self, *, sample_shape=None) -> torch.Tensor:
        if self.deterministic:
            means, _, w = split_mixture_inputs(self.logits, self.components)
            mode = means[torch.arange(len(means)), w.argmax(-1)].detach()
            return mode.expand(*(sample_shape or ()), *mode.shape)
        return mix_in_prior(super().sample(sample_shape=sample_shape), self.prior_share)

    @override(TorchDistribution)
    def logp(self, value: torch.Tensor, **kwargs) -> torch.Tensor:
        log_q = super().logp(value, **kwargs)
        return mixture_log_prob(log_q, log_prior(value), self.prior_share) if self.prior_share > 0 else log_q

    @override(TorchDistribution)
    def kl(self, other: "TorchGaussianMixture") -> torch.Tensor:
        """One-draw estimate ``log q_self(z) - log q_other(z)``, z ~ q_self (a mixture's KL has no closed form)."""
        z = self._dist.sample()
        return self.logp(z) - other.logp(z)

    @override(TorchDistribution)
    def entropy(self) -> torch.Tensor:
        """One-draw estimate ``-log q(z)``, z ~ q (no closed form)."""
        return -self._dist.log_prob(self._dist.sample())

    @staticmethod
    @override(TorchDistribution)
    def required_input_dim(space: gym.Space, *, components: int = 1, **kwargs) -> int:
        return int((components + 1) * space.shape[0] + components)

    @override(TorchDistribution)
    def to_deterministic(self) -> "TorchGaussianMixture":
        out = TorchGaussianMixture(self.logits, self.components, deterministic=True)
        out.__class__ = self.__class__  # keep the bound (partial) class
        return out


class MixtureNoisePolicyModule(PerPromptSigmaModule):
    """K Gaussians per prompt, equal fixed weights or learned ones with a floor, a shared sigma (``--mixture-components``,
    ``--mixture-init``, ``--mixture-weight-floor``, ``--mixture-seed-share``, ``--mixture-width``,
    ``mean_resolution``, ``learn_std``, ``min_std``); see
    :mod:`find_rl.policies.mixture`."""

    @override(TorchRLModule)
    def setup(self):
        self._read_config()
        pol = self.policy
        self.components = int(pol.mixture_components)
        self.mean_shape = latent_mean.mean_shape(self.latent_shape, pol.mean_resolution)
        # seeding starts at N(0, I) exactly: every component at 0
        init = 0.0 if pol.mixture_seed_share else pol.mixture_init
        self.means = nn.Parameter(mx.initial_means(self.num_prompts, self.components, self.mean_shape, init))
        self.init_log_std(1)
        if pol.mixture_seed_share:  # the seeded components' sigma h may sit below --min-std
            self.min_log_std = min(self.min_log_std, math.log(pol.mixture_width))
        self.weight_floor = pol.mixture_weight_floor  # None: equal, fixed weights
        self.weight_logits = nn.Parameter(torch.zeros(self.num_prompts, self.components),
                                          requires_grad=self.weight_floor is not None)

    def mixture(self, prompt_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(means (N, K, D), log_std (N, D), weights (N, K))`` for a batch of prompt indices."""
        low = self.means[prompt_index]  # (N, K, *mean_shape)
        n = len(low)
        means = latent_mean.upsample(low.reshape(n * self.components, *self.mean_shape), self.latent_shape)
        means = means.reshape(n, self.components, -1)
        log_std = self.log_std[prompt_index].clamp(min=self.min_log_std).expand(n, means.shape[-1])
        return means, log_std, mx.weights_from_logits(self.weight_logits[prompt_index], self.weight_floor)

    @override(NoisePolicyRLModule)
    def seeding(self) -> tuple[float, int]:
        """``--mixture-seed-share``, and K draws per prompt: the newest K aligned draws are K i.i.d. ones."""
        return float(self.policy.mixture_seed_share), self.components

    @override(NoisePolicyRLModule)
    @torch.no_grad()
    def seed(self, noises: list[torch.Tensor | None]) -> None:
        """Each prompt with aligned draws: its K means on K of them (:func:`find_rl.policies.mixture.seeded_means`),
        sigma h, equal weight logits; a prompt with none stays as it is."""
        h = float(self.policy.mixture_width)
        for g, z in enumerate(noises):
            if z is None or len(z) == 0:
                continue
            m = mx.seeded_means(z.to(self.means.device, self.means.dtype), self.components, h, seed=mx.INIT_SEED + g)
            self.means[g] = m.reshape(self.components, *self.mean_shape)
            self.log_std[g] = math.log(h)
            self.weight_logits[g] = 0.0

    @override(TorchRLModule)
    def _forward(self, batch, **kwargs):
        means, log_std, weights = self.mixture(self.layout.prompt_index(batch[Columns.OBS]))
        return {Columns.ACTION_DIST_INPUTS: torch.cat([means.flatten(1), log_std, weights.log()], dim=-1)}

    @override(NoisePolicyRLModule)
    def noise_dist_cls(self, prior_share: float = 0.0):
        """The mixture bound to K, or the behaviour mixture with ``prior_share``."""
        return TorchGaussianMixture.get_partial_dist_cls(components=self.components, prior_share=prior_share)

    @override(NoisePolicyRLModule)
    def summary(self, obs, fwd_out):
        """The mixture's exact per-element moments (:func:`find_rl.policies.mixture.moments`)."""
        return mx.moments(*split_mixture_inputs(fwd_out[Columns.ACTION_DIST_INPUTS], self.components))

    @override(NoisePolicyRLModule)
    def calibration_inputs(self, obs, dist_inputs):
        return torch.cat(mx.moments(*split_mixture_inputs(dist_inputs, self.components)), dim=-1)

    @override(GaussianNoiseModule)
    def anchor_per_row(self, obs, fwd_out, kind: str) -> torch.Tensor:
        """``kl``: the components' weighted KL to N(0, I) (an upper bound of the mixture's); ``l2``: the components'
        weighted mean of the released code's stand-in."""
        means, log_std, weights = split_mixture_inputs(fwd_out[Columns.ACTION_DIST_INPUTS], self.components)
        if kind == "kl":
            return mx.kl_bound(means, log_std, weights)
        return (weights * means.pow(2).mean(-1)).sum(-1) + (log_std.exp() - 1.0).pow(2).mean(-1)

    @override(GaussianNoiseModule)
    def distribution_from_obs(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The mixture's moments (what a Gaussian view of it reads)."""
        return mx.moments(*self.mixture(self.layout.prompt_index(obs)))

    @override(GaussianNoiseModule)
    def export(self, obs, **meta):
        from find_rl.policies.export import MixturePolicy

        with torch.no_grad():
            means, log_std, weights = self.mixture(self.layout.prompt_index(obs))
        n = len(obs)
        return MixturePolicy(means=means.reshape(n, self.components, *self.latent_shape),
                             std=log_std.exp().reshape(n, *self.latent_shape),
                             weights=None if self.weight_floor is None else weights, **meta)
