"""FIND's noise policies as RLlib ``TorchRLModule``s: ``NoisePolicyModule`` (one Gaussian per prompt, below) and
``AmortizedNoisePolicyModule`` (one prompt-conditioned Gaussian, mu, sigma = f(text embedding); see
:mod:`find_rl.policies.amortized`). Both train under the same learner; ``--policy-type`` picks one. The mixture of
Gaussians per prompt (:mod:`find_rl.rllib.mixture_module`) builds on their shared base.

For each prompt c (the observation's one-hot), the policy is N(mu_c, sigma_c^2) over the flattened latent:

- ``mu_c`` is stored at ``mean_resolution`` (e.g. 4x4 per channel) and bilinearly upsampled to the latent, or at
  full resolution when ``mean_resolution`` is None. A low-resolution mean moves the layout of the image, not
  its texture, which keeps much more of the frozen model's diversity.
- ``log sigma_c`` is one scalar per prompt (``std_mode="scalar"``) or one per latent element (``"element"``, the
  paper's 2x4xHxW tensor), floored at ``min_std`` (the learner projects the parameter back onto the floor after
  each update, so it never sits below it with a zero gradient); ``learn_std=False`` keeps sigma = 1.
- Initialised at exactly N(0, I) (mu = 0, log sigma = 0): iteration 0 is the frozen model's own distribution.

The module outputs RLlib's DiagGaussian inputs ``cat([mu, log_sigma])`` (2D numbers per row). Nothing of the
diffusion model is in here, and nothing of it is trained.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchDiagGaussian
from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule
from ray.rllib.utils.annotations import override
from torch import nn

from find_rl.objectives.mass_covering import log_prior, mix_in_prior, mixture_log_prob
from find_rl.policies import policy_math as pm
from find_rl.rllib.noise_policy import NoisePolicyRLModule, RegulariserContext


class TorchDiagGaussianBehaviour(TorchDiagGaussian):
    """RLlib's DiagGaussian as the behaviour mixture ``(1 - s) N(mu, sigma^2) + s N(0, I)`` of the mass-covering
    objectives (:mod:`find_rl.objectives.mass_covering`): each row is a fresh N(0, I) draw with probability ``s``
    (``prior_share``) and ``logp`` is the mixture's exact density, so RLlib's recorded ``ACTION_LOGP`` is the
    behaviour's. Built as ``get_partial_dist_cls(prior_share=s)``; the module uses it for exploration only."""

    def __init__(self, loc, scale, prior_share: float = 0.0):
        self.prior_share = float(prior_share)
        super().__init__(loc=loc, scale=scale)

    @classmethod
    @override(TorchDiagGaussian)
    def from_logits(cls, logits, prior_share: float = 0.0, **kwargs):
        loc, log_std = logits.chunk(2, dim=-1)
        return cls(loc=loc, scale=log_std.exp(), prior_share=prior_share)

    @override(TorchDiagGaussian)
    def sample(self, *, sample_shape=None):
        return mix_in_prior(super().sample(sample_shape=sample_shape), self.prior_share)

    @override(TorchDiagGaussian)
    def logp(self, value):
        return mixture_log_prob(super().logp(value), log_prior(value), self.prior_share)


class GaussianNoiseModule(NoisePolicyRLModule):
    """What both Gaussian families share: the forward pass (RLlib's DiagGaussian inputs ``cat([mu, log_sigma])`` from
    :meth:`distribution_from_obs`), the distribution classes, the summary, the anchor, the export."""

    def distribution_from_obs(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, log_sigma)``, each ``(N, D)``, for observation rows."""
        raise NotImplementedError

    @override(TorchRLModule)
    def _forward(self, batch, **kwargs):
        mu, log_std = self.distribution_from_obs(batch[Columns.OBS])
        return {Columns.ACTION_DIST_INPUTS: torch.cat([mu, log_std], dim=-1)}

    @override(NoisePolicyRLModule)
    def noise_dist_cls(self, prior_share: float = 0.0):
        """N(mu, sigma^2): RLlib's DiagGaussian, or the behaviour mixture with ``prior_share``."""
        if prior_share > 0:
            return TorchDiagGaussianBehaviour.get_partial_dist_cls(prior_share=prior_share)
        return TorchDiagGaussian

    @override(NoisePolicyRLModule)
    def summary(self, obs, fwd_out):
        return pm.split_dist_inputs(fwd_out[Columns.ACTION_DIST_INPUTS])

    @override(NoisePolicyRLModule)
    def calibration_inputs(self, obs, dist_inputs):
        return dist_inputs  # the behaviour's own (mu, log sigma), as the env runner recorded them

    @override(NoisePolicyRLModule)
    def regulariser(self, obs, fwd_out, ctx: RegulariserContext):
        """``--anchor kl`` (analytic KL to N(0, I)) or ``l2`` (the released code's stand-in), per element, at
        ``--anchor-coeff`` or a per-prompt adaptive weight (``--target-alignment``); ``none``: no pull."""
        s = ctx.find
        if s.anchor == "none":
            zero = torch.zeros((), device=obs.device)
            return zero, zero
        per_row = self.anchor_per_row(obs, fwd_out, s.anchor)
        anchor = ctx.masked_mean(per_row)
        if ctx.adaptive_anchor is not None:  # one weight per prompt (obs one-hot -> prompt index)
            coeff = ctx.adaptive_anchor.coeffs.to(per_row.device)[ctx.layout.prompt_index(obs)]
            return anchor, ctx.masked_mean(coeff * per_row)
        return anchor, s.anchor_coeff * anchor

    def anchor_per_row(self, obs: torch.Tensor, fwd_out: dict, kind: str) -> torch.Tensor:
        """``(N,)``: the per-element divergence ``--anchor kind`` (``kl`` or ``l2``) weighs, per observation row."""
        mu, log_std = self.summary(obs, fwd_out)
        return pm.kl_to_standard_normal(mu, log_std) if kind == "kl" else pm.l2_anchor(mu, log_std)

    @override(NoisePolicyRLModule)
    def export(self, obs, **meta):
        from find_rl.policies.export import NoisePolicy

        with torch.no_grad():
            mu, log_std = self.distribution_from_obs(obs)
        shape = (len(obs), *self.latent_shape)
        return NoisePolicy(mean=mu.reshape(shape), std=log_std.exp().reshape(shape), **meta)


class PerPromptSigmaModule(GaussianNoiseModule):
    """What the per-prompt families share: ``log sigma`` per prompt (``n_std`` numbers each), learned only with
    ``learn_std``, kept on or above ``log(min_std)`` by :meth:`project`."""

    def init_log_std(self, n_std: int) -> None:
        pol = self.policy
        self.log_std = nn.Parameter(torch.zeros(self.num_prompts, n_std), requires_grad=bool(pol.learn_std))
        self.min_log_std = math.log(float(pol.min_std))

    @override(NoisePolicyRLModule)
    @torch.no_grad()
    def project(self) -> None:
        """Keep log sigma on or above its floor (called by the learner after each update)."""
        self.log_std.clamp_(min=self.min_log_std)


class NoisePolicyModule(PerPromptSigmaModule):
    """One Gaussian per prompt. Reads ``mean_resolution``, ``mean_upsampling`` ("bilinear", or "nearest":
    block-constant, as the flow's shift moves), ``mean_highpass``, ``std_mode`` ("scalar"|"element"), ``learn_std``
    and ``min_std`` from its :class:`~find_rl.core.settings.PolicySettings`."""

    @override(TorchRLModule)
    def setup(self):
        self._read_config()
        pol = self.policy
        res = pol.mean_resolution
        c, spatial = self.latent_shape[0], self.latent_shape[1:]
        self.mean_shape = (c, *([int(res)] * len(spatial))) if res else self.latent_shape
        self.mu = nn.Parameter(torch.zeros(self.num_prompts, *self.mean_shape))
        self.mean_highpass = pol.mean_highpass  # block size whose block averages are removed from mu
        self.nearest = pol.mean_upsampling == "nearest"
        self.init_log_std(1 if pol.std_mode == "scalar" else math.prod(self.latent_shape))

    def distribution(self, prompt_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, log_sigma)``, each ``(N, D)``, for a batch of prompt indices."""
        mu = self.mu[prompt_index]
        if self.mean_shape != self.latent_shape:
            if self.nearest:
                mu = F.interpolate(mu, size=self.latent_shape[1:], mode="nearest")
            else:
                mode = {2: "linear", 3: "bilinear", 4: "trilinear"}[len(self.latent_shape)]
                mu = F.interpolate(mu, size=self.latent_shape[1:], mode=mode, align_corners=False)
        if self.mean_highpass:
            k = int(self.mean_highpass)
            low = F.avg_pool2d(mu, k)
            mu = mu - F.interpolate(low, scale_factor=k, mode="nearest")
        mu = mu.flatten(1)
        log_std = self.log_std[prompt_index].clamp(min=self.min_log_std).expand_as(mu)
        return mu, log_std

    @override(GaussianNoiseModule)
    def distribution_from_obs(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.distribution(self.layout.prompt_index(obs))


class AmortizedNoisePolicyModule(GaussianNoiseModule):
    """The prompt-conditioned policy: mu, sigma = f(text embedding) (:class:`~find_rl.policies.amortized.AmortizedNoiseNet`).

    It reads only the embedding part of the observation (after the ``num_prompts`` one-hot entries), so it serves
    prompts that were never in the training list. Reads ``mean_resolution``, ``learn_std``, ``min_std`` and
    ``amortized_hidden`` / ``amortized_rank`` / ``amortized_linear`` and ``text_features`` (the pooled embedding, or
    the token states read by attention) from its settings.
    """

    reads_embedding = True

    @override(TorchRLModule)
    def setup(self):
        from find_rl.policies.amortized import AmortizedNoiseNet

        self._read_config()
        pol = self.policy
        self.net = AmortizedNoiseNet(embed_dim=self.observation_space.shape[0] - self.num_prompts, latent_shape=self.latent_shape,
                                     mean_resolution=pol.mean_resolution, hidden=pol.amortized_hidden, rank=pol.amortized_rank,
                                     linear=pol.amortized_linear, learn_std=pol.learn_std, min_std=pol.min_std,
                                     token_shape=self.token_shape if pol.text_features == "tokens" else None)

    @override(GaussianNoiseModule)
    def distribution_from_obs(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(self.layout.embedding(obs))

    @override(GaussianNoiseModule)
    def export(self, obs, **meta):
        """The network and the listed prompts' text features: the export answers any prompt of the model."""
        import copy

        from find_rl.policies.export import AmortizedPolicy

        return AmortizedPolicy(net=copy.deepcopy(self.net).eval(), cond=self.layout.embedding(obs).detach().float(),
                               text_features=self.policy.text_features, **meta)
