"""``AmortizedNoiseNet``: one prompt-conditioned Gaussian policy over the initial noise, free of Ray.

Per-prompt FIND learns a separate N(mu_c, sigma_c^2) for every prompt. The amortised policy learns one function
of the prompt's text embedding e (the frozen text encoder's pooled output, as the env's observation carries it)::

    e_hat         = LayerNorm(e)                         (no affine: scale-free across text encoders)
    mu_low(e)     = W_lin e_hat / E                      (linear path; C x r x r numbers, r = mean_resolution)
                  + W_mlp tanh(A e_hat + a) / H          (MLP path, ``hidden`` = H > 0)
                  + sum_k u_k(e) v_k(e)^T                (channel x space path, ``rank`` > 0: u_k in R^C, v_k in R^(r*r),
                                                          both linear in e_hat)
    mu(e)         = bilinear upsampling of mu_low to the latent (or mu_low itself at full resolution)
    log sigma(e)  = linear in e_hat with one output, floored at log(min_std); 0 when the std is not learned

so it serves prompts it never trained on with one forward pass and no training. Each path can be switched on or
off (``linear``, ``hidden``, ``rank``). The linear path alone makes the mean additive in the embedding (compositional
prompts such as "a green circle" would share what "green" and "circle" learned); the MLP path lets trained prompts
depart from that; the channel x space path is a low-rank mean (a spatial template placed in a prompt-dependent mix of
latent channels). On the shapes world none of the three generalises to held-out combinations, and the MLP path is
what lets one policy fit all nine prompts (``bench/RESULTS.md``); ``python -m find_rl.train`` uses linear + MLP (64).
The output layers (and v) start at zero, so the policy starts at exactly N(0, I) for every prompt, like the
per-prompt policy. The 1/E and 1/H factors keep one Adam step on the output weights about as large in mu as one step
of the per-prompt mean, so the same ``lr`` works for both.
A low mean resolution (default 4: 4 x 4 per latent channel) keeps the output small for 4 x 64 x 64 latents.

What it reads of the text (``token_shape``): the pooled embedding as it is (``None``), or the encoder's token states
``(T, H)`` with their mask (the observation's ``"tokens"`` features, :mod:`find_rl.core.observation`), read by
:class:`TokenReader`: ``queries`` learned queries attend over the layer-normalised token states (padding masked out)
and their outputs, concatenated, are e (``queries * H`` numbers). A pooled vector is what one token (CLIP's EOS)
made of the prompt; attention lets the policy read each word's state, as the denoiser's cross-attention does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class TokenReader(nn.Module):
    """Token states ``[hidden (T x H) | mask (T)]`` rows -> ``(N, queries * H)``: learned queries attending over the
    layer-normalised states (scaled dot product, padding masked), outputs concatenated."""

    def __init__(self, token_shape: tuple[int, int], queries: int = 4):
        super().__init__()
        self.tokens, self.width = (int(v) for v in token_shape)
        self.queries = int(queries)
        self.query = nn.Parameter(torch.randn(self.queries, self.width) / math.sqrt(self.width))
        self.key = nn.Linear(self.width, self.width, bias=False)
        self.out_dim = self.queries * self.width

    @property
    def in_dim(self) -> int:
        return self.tokens * (self.width + 1)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        n, t, h = len(rows), self.tokens, self.width
        states = F.layer_norm(rows[:, : t * h].float().reshape(n, t, h), (h,))
        mask = rows[:, t * h :].float() > 0.5
        scores = torch.einsum("qh,nth->nqt", self.query, self.key(states)) / math.sqrt(h)
        scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
        return torch.einsum("nqt,nth->nqh", scores.softmax(-1), states).flatten(1)


class AmortizedNoiseNet(nn.Module):
    def __init__(self, *, embed_dim: int, latent_shape: tuple[int, ...], mean_resolution: int | None = 4,
                 hidden: int = 0, rank: int = 0, linear: bool = True, learn_std: bool = False, min_std: float = 0.5,
                 token_shape: tuple[int, int] | None = None, queries: int = 4):
        super().__init__()
        self._config = dict(embed_dim=int(embed_dim), latent_shape=[int(v) for v in latent_shape],
                            mean_resolution=None if mean_resolution is None else int(mean_resolution), hidden=int(hidden),
                            rank=int(rank), linear=bool(linear), learn_std=bool(learn_std), min_std=float(min_std),
                            token_shape=None if token_shape is None else [int(v) for v in token_shape], queries=int(queries))
        if embed_dim < 1:
            raise ValueError("the amortised policy needs a text embedding in the observation; this pipeline's text encoder "
                             "gives none (use the per-prompt policy)")
        self.reader = TokenReader(token_shape, queries) if token_shape is not None else None
        if self.reader is not None and self.reader.in_dim != embed_dim:
            raise ValueError(f"token features of shape {tuple(token_shape)} take {self.reader.in_dim} numbers, the "
                             f"observation's text part has {embed_dim}")
        self.in_dim = int(embed_dim)  # what the observation gives; embed_dim: what the paths read
        embed_dim = self.reader.out_dim if self.reader is not None else embed_dim
        self.embed_dim, self.hidden, self.rank = int(embed_dim), int(hidden), int(rank)
        self.latent_shape = tuple(int(v) for v in latent_shape)
        c, spatial = self.latent_shape[0], self.latent_shape[1:]
        self.mean_shape = (c, *([int(mean_resolution)] * len(spatial))) if mean_resolution else self.latent_shape
        n_out = math.prod(self.mean_shape)
        if self.hidden < 0:
            raise ValueError(f"hidden must be >= 0 (0: the linear path alone), got {hidden}")
        if self.rank < 0:
            raise ValueError(f"rank must be >= 0 (0: no channel x space path), got {rank}")
        if not (linear or self.hidden or self.rank):
            raise ValueError("the amortised mean needs at least one path: the linear one, hidden > 0 or rank > 0")
        self.mean_linear = nn.Linear(self.embed_dim, n_out, bias=True) if linear else None
        self.features = nn.Linear(self.embed_dim, self.hidden) if self.hidden else None
        self.mean_mlp = nn.Linear(self.hidden, n_out, bias=False) if self.hidden else None
        # channel x space path: mu_low[c, x] = sum_r u_r(e)[c] v_r(e)[x], both factors linear in e. u starts near one
        # (every channel alike, a little noise to tell the ranks apart), v at zero: the path starts at zero and its
        # gradient reaches v from the first step.
        n_space = math.prod(self.mean_shape[1:])
        self.channel_mix = nn.Linear(self.embed_dim, self.rank * c, bias=True) if self.rank else None
        self.spatial = nn.Linear(self.embed_dim, self.rank * n_space, bias=True) if self.rank else None
        self.learn_std = bool(learn_std)
        self.std_linear = nn.Linear(self.embed_dim, 1) if self.learn_std else None
        self.min_log_std = math.log(float(min_std))
        if self.channel_mix is not None:
            nn.init.normal_(self.channel_mix.weight, std=0.1 * math.sqrt(self.embed_dim))  # u ~ 1 +- 0.1: symmetry broken
            nn.init.ones_(self.channel_mix.bias)
        for layer in (self.mean_linear, self.mean_mlp, self.spatial, self.std_linear):
            if layer is not None:  # exactly N(0, I) at initialisation
                nn.init.zeros_(layer.weight)
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)

    def config(self) -> dict:
        """The constructor's keyword arguments (JSON-safe): ``AmortizedNoiseNet(**net.config())`` rebuilds it."""
        return dict(self._config)

    def read(self, embedding: torch.Tensor) -> torch.Tensor:
        """The observation's text part ``(N, in_dim)`` -> layer-normalised e ``(N, embed_dim)``."""
        if embedding.shape[-1] != self.in_dim:
            raise ValueError(f"embedding has {embedding.shape[-1]} features; this policy was built for {self.in_dim}")
        e = self.reader(embedding) if self.reader is not None else embedding.float()
        return F.layer_norm(e, (self.embed_dim,))

    def mean_low(self, embedding: torch.Tensor) -> torch.Tensor:
        """``(N, E)`` embeddings -> the low-resolution mean as ``(N, C, r*r)`` (before upsampling)."""
        return self._mean_low(self.read(embedding))

    def _mean_low(self, e: torch.Tensor) -> torch.Tensor:
        """The same from layer-normalised embeddings ``e``."""
        mu = torch.zeros(len(e), math.prod(self.mean_shape), device=e.device)
        if self.mean_linear is not None:
            mu = mu + self.mean_linear(e) / self.embed_dim
        if self.channel_mix is not None:
            u = (self.channel_mix(e) / self.embed_dim).reshape(len(e), self.rank, self.mean_shape[0])
            v = (self.spatial(e) / self.embed_dim).reshape(len(e), self.rank, -1)
            mu = mu + torch.einsum("nrc,nrs->ncs", u, v).flatten(1)
        if self.mean_mlp is not None:
            mu = mu + self.mean_mlp(torch.tanh(self.features(e))) / self.hidden
        return mu.reshape(len(e), self.mean_shape[0], -1)

    def forward(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, E)`` text embeddings -> ``(mu, log_sigma)``, each ``(N, D)`` over the flattened latent."""
        e = self.read(embedding)
        mu = self._mean_low(e).reshape(len(e), *self.mean_shape)
        if self.mean_shape != self.latent_shape:
            mode = {2: "linear", 3: "bilinear", 4: "trilinear"}[len(self.latent_shape)]
            mu = F.interpolate(mu, size=self.latent_shape[1:], mode=mode, align_corners=False)
        mu = mu.flatten(1)
        if self.std_linear is not None:
            log_std = (self.std_linear(e) / self.embed_dim).clamp(min=self.min_log_std)
        else:
            log_std = torch.zeros(len(e), 1, device=mu.device)
        return mu, log_std.expand_as(mu)
