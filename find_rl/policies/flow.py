"""A prompt-conditioned coupling flow (RealNVP / Neural Spline Flow style) over the initial noise, exact density, no Ray.

Notation (code name -> math):
    z, D        -> the initial noise (an action), flattened to D elements
    view        -> an orthonormal split z = B y + r: y = B^T z are the flow coordinates (``flow_dim`` of them),
                   r = (I - B B^T) z the rest. ``resolution=r`` takes B = the C x r x r block means scaled by
                   sqrt(block size) (orthonormal); ``resolution=None`` takes B = I (the flow sees every element).
    u           -> the base noise, u ~ N(0, I_D), split the same way into (u_y, u_r)
    c           -> the condition: a prompt index (one-hot) or a text embedding (layer-normalised)
    T_c         -> the flow on y: K couplings, then a per-condition elementwise affine A_c(x) = m_c + exp(a_c) * x
    coupling k  -> mask M_k (checkerboard over space or half the channels, alternating with its complement):
                   x' = M x + (1 - M) g(x; theta),  theta = NN_k(M x, M, context(c)),  log|det| = sum (1 - M) log g'(x)
                   with g(x) = x exp(s) + t (``coupling="affine"``) or a monotone rational-quadratic spline (``"spline"``,
                   :mod:`find_rl.policies.flow_spline`); NN_k is a small conv net, so couplings are the same function at every
                   position (translation-equivariant up to the borders)
    sample      -> z = B T_c(u_y) + u_r
    log q(z|c)  -> log N(z; 0, I) + log N(u_y; 0, I) - log N(y; 0, I) - log|det dT_c/du_y|,  u_y = T_c^{-1}(B^T z)
                   (computed as log N(u_y; 0, I) + log N(r; 0, I - B B^T) + log|det dT_c^{-1}/dy|, without cancellation)
                   (the rest r is N(0, I) untouched, and |z|^2 = |y|^2 + |r|^2, so the 720 or 16,320 other directions
                   cancel: only the flow coordinates enter the ratio q / N)
    KL          -> KL(q_c || N(0, I)) = E_{u_y}[ (|T_c(u_y)|^2 - |u_y|^2) / 2 - log|det dT_c/du_y| ]  (exact identity;
                   :func:`reverse_kl` estimates it on fresh reparameterised draws, so it is differentiable)

At construction every last layer (the couplings' output convs, the affine's shift and log-scale) is zero, so
theta = m = a = 0: every g is the identity (exp(0) x + 0; a spline with equal bins and unit slopes), T_c is the
identity, q = N(0, I) exactly and a sample equals its base noise u.
Log-scales are soft-clamped, s = S tanh(s_raw / S), which is exact at 0 and keeps exp(s) in [e^-S, e^S].

Parameter units: the affine shift m is stored per latent element (a shift of every element of a block, like the
Gaussian policy's 4 x 4 mean), so the same learning rate moves it as far; the flow coordinates are sqrt(block size)
times larger. :meth:`ConditionalCouplingFlow.param_groups` names the shift/scale, the conditioning and the coupling
weights so they can take different learning rates.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from find_rl.policies.flow_spline import rq_spline

LOG_2PI = math.log(2 * math.pi)


class BlockView:
    """The orthonormal split of a flattened latent ``(C, [F,] H, W)`` into flow coordinates ``(N, C', h, w)`` and the
    rest (frames, if any, are folded into the channels: C' = C F)."""

    def __init__(self, latent_shape: tuple[int, ...], resolution: int | None):
        if len(latent_shape) not in (3, 4):
            raise ValueError(f"the flow needs an image or video latent (C, H, W) / (C, F, H, W), got {tuple(latent_shape)}")
        self.latent_shape = tuple(int(v) for v in latent_shape)
        self.channels, (self.height, self.width) = math.prod(self.latent_shape[:-2]), self.latent_shape[-2:]
        if resolution is None:
            self.block = (1, 1)
        else:
            if resolution < 1 or self.height % resolution or self.width % resolution:
                raise ValueError(f"resolution {resolution} must divide the latent's {self.height} x {self.width}")
            self.block = (self.height // resolution, self.width // resolution)
        self.scale = math.sqrt(self.block[0] * self.block[1])  # |one block's indicator| : makes the basis orthonormal
        self.shape = (self.channels, self.height // self.block[0], self.width // self.block[1])
        self.dim, self.flow_dim = math.prod(self.latent_shape), math.prod(self.shape)

    def split(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, D)`` -> ``(y (N, C', h, w), r (N, D))`` with ``z = lift(y) + r``."""
        img = z.reshape(len(z), self.channels, self.height, self.width)
        if self.block == (1, 1):
            return img, torch.zeros_like(z)
        y = F.avg_pool2d(img, self.block) * self.scale
        return y, z - self.lift(y)

    def lift(self, y: torch.Tensor) -> torch.Tensor:
        """``B y``: flow coordinates back to a flattened latent."""
        if self.block == (1, 1):
            return y.reshape(len(y), -1)
        return (y / self.scale).repeat_interleave(self.block[0], 2).repeat_interleave(self.block[1], 3).reshape(len(y), -1)


def make_mask(kind: str, shape: tuple[int, int, int]) -> torch.Tensor:
    """A ``(1, C, h, w)`` 0/1 mask: ``"checkerboard"`` ((i + j) even) or ``"channel"`` (the first half of the channels)."""
    c, h, w = shape
    if kind == "checkerboard":
        m = ((torch.arange(h)[:, None] + torch.arange(w)[None, :]) % 2 == 0).float().expand(c, h, w)
    elif kind == "channel":
        m = (torch.arange(c) < c // 2).float()[:, None, None].expand(c, h, w)
    else:
        raise ValueError(f"mask must be 'checkerboard' or 'channel', got {kind!r}")
    if m.sum() == 0 or m.sum() == m.numel():
        raise ValueError(f"a {kind} mask on flow coordinates {shape} leaves one half empty; use the other mask type")
    return m.reshape(1, c, h, w).clone()


def soft_clamp(s: torch.Tensor, bound: float) -> torch.Tensor:
    return bound * torch.tanh(s / bound)


class Coupling(nn.Module):
    """``x' = M x + (1 - M) g(x; theta)``, theta from a small conv net on ``(M x, M)`` plus the condition's context.

    ``kind="affine"``: g = x exp(s) + t.  ``kind="spline"``: g = a monotone rational-quadratic spline with ``bins`` bins
    on [-``bound``, ``bound``], identity outside (:func:`~find_rl.policies.flow_spline.rq_spline`); it can make a coordinate's
    conditional distribution multimodal, which an affine map cannot.
    """

    def __init__(self, mask: torch.Tensor, *, kind: str, hidden: int, context_dim: int, max_log_scale: float,
                 bins: int = 8, bound: float = 3.0):
        super().__init__()
        if kind not in ("affine", "spline"):
            raise ValueError(f"coupling must be 'affine' or 'spline', got {kind!r}")
        c = mask.shape[1]
        self.kind, self.bins, self.bound, self.max_log_scale = kind, int(bins), float(bound), float(max_log_scale)
        self.n_params = 2 if kind == "affine" else 3 * self.bins - 1
        self.register_buffer("mask", mask)
        self.register_buffer("free", torch.nonzero(mask.flatten() == 0).squeeze(1), persistent=False)  # (F,) indices
        self.inp = nn.Conv2d(c + 1, hidden, 3, padding=1)
        self.ctx = nn.Linear(context_dim, hidden, bias=False)
        self.mid = nn.Conv2d(hidden, hidden, 1)
        self.out = nn.Conv2d(hidden, self.n_params * c, 1)
        nn.init.zeros_(self.out.weight)  # identity at initialisation (both kinds)
        nn.init.zeros_(self.out.bias)

    def _params(self, x_kept: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """``(N, F, n_params)``: raw parameters of g for the F free elements."""
        m = self.mask[:, :1].expand(len(x_kept), 1, *self.mask.shape[2:])  # where the kept half is (input channel)
        h = F.silu(self.inp(torch.cat([x_kept, m], 1)) + self.ctx(context)[:, :, None, None])
        theta = self.out(F.silu(self.mid(h)))
        return theta.reshape(len(theta), self.n_params, -1)[:, :, self.free].transpose(1, 2).contiguous()

    def _g(self, x: torch.Tensor, theta: torch.Tensor, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kind == "affine":
            s, t = soft_clamp(theta[..., 0], self.max_log_scale), theta[..., 1]
            return ((x - t) * torch.exp(-s), -s) if inverse else (x * torch.exp(s) + t, s)
        k = self.bins
        return rq_spline(x, theta[..., :k], theta[..., k : 2 * k], theta[..., 2 * k :], bound=self.bound, inverse=inverse)

    def _couple(self, x: torch.Tensor, context: torch.Tensor, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        # M x' = M x: the kept half is unchanged, so the inverse sees the same parameters
        flat = x.flatten(1)
        g, logdet = self._g(flat[:, self.free], self._params(x * self.mask, context), inverse)
        return flat.index_copy(1, self.free, g).reshape(x.shape), logdet.sum(1)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._couple(x, context, inverse=False)

    def inverse(self, y: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._couple(y, context, inverse=True)


class ConditionalCouplingFlow(nn.Module):
    """q(z | c): the flow T_c on the view's coordinates, identity on the rest (see the module docstring).

    Conditioning: ``num_conditions=P`` (per-prompt: ``cond`` is an index tensor ``(N,)`` or one-hot rows ``(N, P)``)
    or ``embed_dim=E`` (amortised: ``cond`` is ``(N, E)`` text embeddings, layer-normalised here). Exactly one is > 0.
    """

    def __init__(self, *, latent_shape: tuple[int, ...], num_conditions: int = 0, embed_dim: int = 0,
                 resolution: int | None = 4, num_blocks: int = 4, hidden: int = 32, context_dim: int = 8,
                 masks: tuple[str, ...] = ("checkerboard", "channel"), max_log_scale: float = 2.0,
                 coupling: str = "affine", bins: int = 8, bound: float = 3.0):
        super().__init__()
        if (num_conditions > 0) == (embed_dim > 0):
            raise ValueError(f"give exactly one of num_conditions (per-prompt) or embed_dim (amortised), "
                             f"got {num_conditions}, {embed_dim}")
        if num_blocks < 0 or hidden < 1 or context_dim < 1:
            raise ValueError(f"need num_blocks >= 0, hidden >= 1, context_dim >= 1; got {num_blocks}, {hidden}, {context_dim}")
        self.view = BlockView(latent_shape, resolution)
        self.num_conditions, self.embed_dim = int(num_conditions), int(embed_dim)
        self._config = dict(latent_shape=list(self.view.latent_shape), num_conditions=self.num_conditions,
                            embed_dim=self.embed_dim, resolution=resolution, num_blocks=num_blocks, hidden=hidden,
                            context_dim=context_dim, masks=list(masks), max_log_scale=max_log_scale, coupling=coupling,
                            bins=bins, bound=bound)
        cond_dim, per_prompt = self.num_conditions or self.embed_dim, self.num_conditions > 0
        self.context = nn.Linear(cond_dim, context_dim, bias=not per_prompt)
        if per_prompt:  # distinct random context vectors per prompt (the output layers being zero keeps q = N(0, I))
            nn.init.normal_(self.context.weight)
        mask_list = [make_mask(masks[(i // 2) % len(masks)], self.view.shape) for i in range(num_blocks)]
        self.blocks = nn.ModuleList(
            Coupling(m if i % 2 == 0 else 1.0 - m, kind=coupling, hidden=hidden, context_dim=context_dim,
                     max_log_scale=max_log_scale, bins=bins, bound=bound) for i, m in enumerate(mask_list))
        self.shift = nn.Linear(cond_dim, self.view.flow_dim, bias=not per_prompt)
        self.log_scale = nn.Linear(cond_dim, self.view.flow_dim, bias=not per_prompt)
        for layer in (self.shift, self.log_scale):
            nn.init.zeros_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        self.max_log_scale = float(max_log_scale)

    @property
    def dim(self) -> int:
        return self.view.dim

    def config(self) -> dict:
        """The constructor's keyword arguments (JSON-safe): ``ConditionalCouplingFlow(**flow.config())`` rebuilds it."""
        return dict(self._config)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """``{"affine": shift/log-scale, "context": the condition's embedding, "couplings": the conv nets}``."""
        return {"affine": [*self.shift.parameters(), *self.log_scale.parameters()], "context": list(self.context.parameters()),
                "couplings": list(self.blocks.parameters())}

    def features(self, cond: torch.Tensor) -> torch.Tensor:
        """Index (int or ``(N,)``), one-hot rows or embeddings (``(N, F)`` or one ``(F,)``) -> ``(N, cond_dim)`` floats."""
        cond = torch.as_tensor(cond, device=self.context.weight.device)
        if not cond.is_floating_point():
            if not self.num_conditions:
                raise ValueError("an index condition needs a per-prompt flow (num_conditions > 0); pass text embeddings")
            return F.one_hot(cond.long().reshape(-1), self.num_conditions).to(self.context.weight.dtype)
        if cond.shape[-1] != (self.num_conditions or self.embed_dim):
            raise ValueError(f"condition has {cond.shape[-1]} features; this flow takes "
                             f"{self.num_conditions or self.embed_dim}")
        cond = cond.to(self.context.weight.dtype).reshape(-1, cond.shape[-1])
        return cond if self.num_conditions else F.layer_norm(cond, (self.embed_dim,))

    def _affine(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (len(feats), *self.view.shape)
        a = soft_clamp(self.log_scale(feats), self.max_log_scale)
        return (self.shift(feats) * self.view.scale).reshape(shape), a.reshape(shape)

    def transform(self, u_y: torch.Tensor, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """T_c on flow coordinates ``(N, C', h, w)``: ``(y, log|det dT/du_y|)``."""
        ctx, x, logdet = self.context(feats), u_y, u_y.new_zeros(len(u_y))
        for block in self.blocks:
            x, ld = block(x, ctx)
            logdet = logdet + ld
        m, a = self._affine(feats)
        return x * torch.exp(a) + m, logdet + a.flatten(1).sum(1)

    def inverse_transform(self, y: torch.Tensor, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """T_c^{-1} on flow coordinates: ``(u_y, log|det dT^{-1}/dy|)``."""
        m, a = self._affine(feats)
        ctx, x, logdet = self.context(feats), (y - m) * torch.exp(-a), -a.flatten(1).sum(1)
        for block in reversed(self.blocks):
            x, ld = block.inverse(x, ctx)
            logdet = logdet + ld
        return x, logdet

    def forward(self, u: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Base noise ``(N, D)`` -> ``(z (N, D), log|det dz/du| (N,))``."""
        u_y, u_r = self.view.split(u)
        y, logdet = self.transform(u_y, self.features(cond))
        return self.view.lift(y) + u_r, logdet

    def inverse(self, z: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, D)`` noise -> ``(u (N, D), log|det du/dz| (N,))``."""
        y, r = self.view.split(z)
        u_y, logdet = self.inverse_transform(y, self.features(cond))
        return self.view.lift(u_y) + r, logdet

    def log_prob(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Joint log-density ``log q(z | c)``, ``(N,)`` (sum over all D elements)."""
        y, r = self.view.split(z)
        u_y, logdet = self.inverse_transform(y, self.features(cond))
        # log N(u_y) + log N(r) + log|det dT^{-1}/dy|
        return -0.5 * (r.pow(2).sum(1) + u_y.flatten(1).pow(2).sum(1) + self.dim * LOG_2PI) + logdet

    def sample(self, cond: torch.Tensor, n: int = 1, *, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` reparameterised draws per condition row (row-major): ``(z (N n, D), log q(z | c) (N n,))``."""
        feats = self.features(cond).repeat_interleave(n, 0)
        u = torch.randn(len(feats), self.dim, generator=generator, device=feats.device, dtype=feats.dtype)
        u_y, u_r = self.view.split(u)
        y, logdet = self.transform(u_y, feats)
        return self.view.lift(y) + u_r, -0.5 * (u.pow(2).sum(1) + self.dim * LOG_2PI) - logdet  # u_r = r: N(u) = N(u_y) N(r)

    def mode(self, cond: torch.Tensor) -> torch.Tensor:
        """``T_c(0)``: the image of the base distribution's mode, ``(N, D)`` (the deterministic action)."""
        feats = self.features(cond)
        y, _ = self.transform(feats.new_zeros(len(feats), *self.view.shape), feats)
        return self.view.lift(y)


def reverse_kl(flow: ConditionalCouplingFlow, cond: torch.Tensor, n: int = 1, *, generator: torch.Generator | None = None
               ) -> torch.Tensor:
    """Per-row estimate ``(N,)`` of KL(q_c || N(0, I)) in nats, from ``n`` fresh reparameterised draws of q_c each.

    ``E_q[log q(z) - log N(z; 0, I)]`` reduces to the flow coordinates (module docstring); it includes the
    log-determinant (the entropy), is differentiable in the flow's parameters, and is exact for n -> inf.
    """
    feats = flow.features(cond).repeat_interleave(n, 0)
    u_y = torch.randn(len(feats), *flow.view.shape, generator=generator, device=feats.device, dtype=feats.dtype)
    y, logdet = flow.transform(u_y, feats)
    per_draw = 0.5 * (y.flatten(1).pow(2).sum(1) - u_y.flatten(1).pow(2).sum(1)) - logdet
    return per_draw.reshape(-1, n).mean(1)


def replay_weights(z: torch.Tensor, logp_behaviour: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """Self-normalised importance weights ``(N,)`` that turn stored samples of behaviour policies into samples of N(0, I).

    For a replay term ``-mean_i w_i log q(z_i | c_i)`` over stored **rewarded** noises: each z_i was drawn from the
    behaviour q_b that recorded ``logp_behaviour`` (RLlib's ``ACTION_LOGP``), so ``w_i ∝ N(z_i; 0, I) / q_b(z_i)``,
    normalised to mean 1 within each ``group`` (prompt), reweights the rewarded set toward the prior restricted to
    the rewarded region, N(z) 1[r(z) = 1] / Z: the small-beta target. Maximum likelihood on it is mass-covering (it pulls
    q toward every rewarded region in proportion to its prior mass), where the policy gradient alone is mode-seeking.
    """
    log_w = -0.5 * (z.pow(2).sum(1) + z.shape[1] * LOG_2PI) - logp_behaviour
    w = torch.zeros_like(log_w)
    for g in torch.unique(group):
        sel = group == g
        w[sel] = torch.softmax(log_w[sel], 0) * sel.sum()
    return w.detach()
