"""``AmortizedNoiseNet``: one prompt-conditioned Gaussian policy over the initial noise, free of Ray.

Per-prompt FIND learns a separate N(mu_c, sigma_c^2) for every prompt. The amortised policy learns one function
of the prompt's text embedding e (the frozen text encoder's pooled output, as the env's observation carries it)::

    e_hat         = LayerNorm(e)                         (no affine: scale-free across text encoders)
    mu_low(e)     = W_lin e_hat / E  [+ W_mlp tanh(A e_hat + a) / H]   (C x r x r numbers, r = mean_resolution)
    mu(e)         = bilinear upsampling of mu_low to the latent (or mu_low itself at full resolution)
    log sigma(e)  = the same form with one output, floored at log(min_std); 0 when the std is not learned

so it serves prompts it never trained on with one forward pass and no training. The linear path makes the mean
additive in the embedding (compositional prompts such as "a green circle" share what "green" and "circle" learned);
an optional small MLP path (``hidden`` units; default 0 = the linear path alone) lets trained prompts depart from
that (on the shapes world it made trained prompts worse, 0.882 vs 0.934 on seven prompts, and held-out ones no better). Both output layers start at zero, so the policy starts
at exactly N(0, I) for every prompt, like the per-prompt policy. The 1/E and 1/H factors keep one Adam step on
the output weights about as large in mu as one step of the per-prompt mean, so the same ``lr`` works for both.
A low mean resolution (default 4: 4 x 4 per latent channel) keeps the output small for 4 x 64 x 64 latents.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class AmortizedNoiseNet(nn.Module):
    def __init__(self, *, embed_dim: int, latent_shape: tuple[int, ...], mean_resolution: int | None = 4,
                 hidden: int = 0, learn_std: bool = False, min_std: float = 0.5):
        super().__init__()
        if embed_dim < 1:
            raise ValueError("the amortised policy needs a text embedding in the observation; this pipeline's text encoder "
                             "gives none (use the per-prompt policy)")
        self.embed_dim, self.hidden = int(embed_dim), int(hidden)
        self.latent_shape = tuple(int(v) for v in latent_shape)
        c, spatial = self.latent_shape[0], self.latent_shape[1:]
        self.mean_shape = (c, *([int(mean_resolution)] * len(spatial))) if mean_resolution else self.latent_shape
        n_out = math.prod(self.mean_shape)
        if self.hidden < 0:
            raise ValueError(f"hidden must be >= 0 (0: the linear path alone), got {hidden}")
        self.mean_linear = nn.Linear(self.embed_dim, n_out, bias=True)
        self.features = nn.Linear(self.embed_dim, self.hidden) if self.hidden else None
        self.mean_mlp = nn.Linear(self.hidden, n_out, bias=False) if self.hidden else None
        self.learn_std = bool(learn_std)
        self.std_linear = nn.Linear(self.embed_dim, 1) if self.learn_std else None
        self.min_log_std = math.log(float(min_std))
        for layer in (self.mean_linear, self.mean_mlp, self.std_linear):
            if layer is not None:  # exactly N(0, I) at initialisation
                nn.init.zeros_(layer.weight)
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)

    def forward(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, E)`` text embeddings -> ``(mu, log_sigma)``, each ``(N, D)`` over the flattened latent."""
        if embedding.shape[-1] != self.embed_dim:
            raise ValueError(f"embedding has {embedding.shape[-1]} features; this policy was built for {self.embed_dim}")
        e = F.layer_norm(embedding.float(), (self.embed_dim,))
        mu = self.mean_linear(e) / self.embed_dim
        if self.mean_mlp is not None:
            mu = mu + self.mean_mlp(torch.tanh(self.features(e))) / self.hidden
        mu = mu.reshape(len(e), *self.mean_shape)
        if self.mean_shape != self.latent_shape:
            mode = {2: "linear", 3: "bilinear", 4: "trilinear"}[len(self.latent_shape)]
            mu = F.interpolate(mu, size=self.latent_shape[1:], mode=mode, align_corners=False)
        mu = mu.flatten(1)
        if self.std_linear is not None:
            log_std = (self.std_linear(e) / self.embed_dim).clamp(min=self.min_log_std)
        else:
            log_std = torch.zeros(len(e), 1, device=mu.device)
        return mu, log_std.expand_as(mu)
