"""FIND's noise policies as RLlib ``TorchRLModule``s: ``NoisePolicyModule`` (one Gaussian per prompt, below) and
``AmortizedNoisePolicyModule`` (one prompt-conditioned Gaussian, mu, sigma = f(text embedding); see
:mod:`find_rl.policies.amortized`). Both train under the same learner; ``--policy-type`` picks one.

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

from find_rl.core.observation import ObservationLayout


class _GaussianNoiseModule(TorchRLModule):
    """What both noise policies share: the config checks, the forward pass (RLlib's DiagGaussian inputs
    ``cat([mu, log_sigma])`` from :meth:`distribution_from_obs`) and the distribution classes."""

    def _read_shapes(self) -> None:
        cfg = self.model_config
        self.num_prompts = int(cfg["num_prompts"])
        self.layout = ObservationLayout(self.num_prompts)
        self.latent_shape = tuple(int(v) for v in cfg["latent_shape"])
        if math.prod(self.latent_shape) != self.action_space.shape[0]:
            raise ValueError(f"latent_shape {self.latent_shape} does not match the action size {self.action_space.shape[0]}")

    def distribution_from_obs(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, log_sigma)``, each ``(N, D)``, for observation rows."""
        raise NotImplementedError

    @override(TorchRLModule)
    def _forward(self, batch, **kwargs):
        mu, log_std = self.distribution_from_obs(batch[Columns.OBS])
        return {Columns.ACTION_DIST_INPUTS: torch.cat([mu, log_std], dim=-1)}

    @override(TorchRLModule)
    def get_inference_action_dist_cls(self):
        return TorchDiagGaussian

    @override(TorchRLModule)
    def get_exploration_action_dist_cls(self):
        return TorchDiagGaussian

    @override(TorchRLModule)
    def get_train_action_dist_cls(self):
        return TorchDiagGaussian


class NoisePolicyModule(_GaussianNoiseModule):
    """model_config keys: ``num_prompts``, ``latent_shape``, ``mean_resolution`` (int or None),
    ``std_mode`` ("scalar"|"element"), ``learn_std`` (bool), ``min_std`` (float), ``mean_upsampling``
    ("bilinear", the default, or "nearest": block-constant, as the flow's shift moves)."""

    @override(TorchRLModule)
    def setup(self):
        self._read_shapes()
        cfg = self.model_config
        res = cfg.get("mean_resolution")
        c, spatial = self.latent_shape[0], self.latent_shape[1:]
        self.mean_shape = (c, *([int(res)] * len(spatial))) if res else self.latent_shape
        self.mu = nn.Parameter(torch.zeros(self.num_prompts, *self.mean_shape))
        self.mean_highpass = cfg.get("mean_highpass")  # block size whose block averages are removed from mu
        self.nearest = cfg.get("mean_upsampling", "bilinear") == "nearest"
        std_mode = cfg.get("std_mode", "scalar")
        if std_mode not in ("scalar", "element"):
            raise ValueError(f"std_mode must be 'scalar' or 'element', got {std_mode!r}")
        n_std = 1 if std_mode == "scalar" else math.prod(self.latent_shape)
        self.log_std = nn.Parameter(torch.zeros(self.num_prompts, n_std), requires_grad=bool(cfg.get("learn_std", True)))
        self.min_log_std = math.log(float(cfg.get("min_std", 0.5)))

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

    @torch.no_grad()
    def project(self) -> None:
        """Keep log sigma on or above its floor (called by the learner after each update)."""
        self.log_std.clamp_(min=self.min_log_std)

    @override(_GaussianNoiseModule)
    def distribution_from_obs(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.distribution(self.layout.prompt_index(obs))


class AmortizedNoisePolicyModule(_GaussianNoiseModule):
    """The prompt-conditioned policy: mu, sigma = f(text embedding) (:class:`~find_rl.policies.amortized.AmortizedNoiseNet`).

    It reads only the embedding part of the observation (after the ``num_prompts`` one-hot entries), so it serves
    prompts that were never in the training list. model_config keys: ``num_prompts``, ``latent_shape``,
    ``mean_resolution``, ``learn_std``, ``min_std``, and optionally ``hidden`` (default 0: no MLP path), ``rank``
    (default 0: no channel x space path) and ``linear`` (default True: keep the linear path).
    """

    @override(TorchRLModule)
    def setup(self):
        from find_rl.policies.amortized import AmortizedNoiseNet

        self._read_shapes()
        cfg = self.model_config
        self.net = AmortizedNoiseNet(embed_dim=self.observation_space.shape[0] - self.num_prompts, latent_shape=self.latent_shape,
                                     mean_resolution=cfg.get("mean_resolution"), hidden=int(cfg.get("hidden", 0)),
                                     rank=int(cfg.get("rank", 0)), linear=bool(cfg.get("linear", True)),
                                     learn_std=bool(cfg.get("learn_std", False)), min_std=float(cfg.get("min_std", 0.5)))

    @override(_GaussianNoiseModule)
    def distribution_from_obs(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(self.layout.embedding(obs))
