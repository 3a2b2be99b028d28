"""The released FIND code's training loop, as an ablation (``vpx-ecnu/FIND``, ``dist_train2.py``; see
``shared/notes/paper.md`` sections 2-3).

Per prompt and iteration: draw **one** z from N(mu, sigma^2) (per-element mu and sigma, like the paper's
2 x C x H x W tensor), render it, score it, take one step on the reward predictor g (lr 1e-4) and one policy step
(AdamW, lr 1e-3) on::

    L = -w_r * (r - g) * clamp(ratio, 1 - eps, 1 + eps) + w_kl * mean[mu^2 + (sigma - 1)^2]
    ratio = exp(mean_d log N(z; mu, sigma) - mean_d log N(z; 0, 1))        (against the *initial* policy)

with w_r = 10, w_kl = 0.01, eps = 0.2: the clamp-only loss (no PPO min) and the L2 stand-in for a KL. No inner
epochs, no sample reuse. One deliberate difference: each reward is paired with the sample that earned it (the
released code reads a stale buffer entry, a bug this ablation does not copy). Prompts are rendered together in one
call for speed; each still gets one sample per iteration from its own distribution.

``mean_resolution`` r (None: a per-element mean, the released code's) gives the loop FIND's parametrisation: the
learned mean parameter is C x r x r and mu is its bilinear upsampling (:mod:`find_rl.policies.latent_mean`, the same
interpolation as ``NoisePolicyModule``); the loss, the anchor and g still see the full-resolution mu, and gradients
reach the low-resolution parameter through the upsampling. sigma stays per element.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from find_rl.policies import latent_mean
from find_rl.policies import policy_math as pm
from find_rl.baselines.scoring import render_and_score
from find_rl.objectives.calibration import RewardCalibrator


@dataclass
class PaperLoopSettings:
    iterations: int = 2560  # one sample per prompt per iteration: the same budget as FIND's 80 x 32
    lr: float = 1e-3
    value_lr: float = 1e-4
    clip: float = 0.2
    reward_weight: float = 10.0
    kl_weight: float = 0.01
    mean_resolution: int | None = None  # r: learn a C x r x r mean, bilinearly upsampled (FIND's); None: per element

    def __post_init__(self):
        latent_mean.check_resolution(self.mean_resolution)
        if self.iterations < 1 or self.lr <= 0 or self.clip <= 0:
            raise ValueError(f"paper loop needs iterations >= 1, lr > 0, clip > 0; got {self.iterations}, {self.lr}, {self.clip}")


def paper_loss(z: torch.Tensor, mu: torch.Tensor, log_std: torch.Tensor, adv: torch.Tensor, s: PaperLoopSettings) -> torch.Tensor:
    """The released code's policy loss for rows of samples ``z`` ``(N, D)`` with calibrated rewards ``adv``."""
    zeros = torch.zeros_like(z)
    ratio = torch.exp(pm.log_ratio(pm.mean_log_density(z, mu, log_std), pm.mean_log_density(z, zeros, zeros)))
    surrogate = pm.clipped_surrogate(ratio, adv, s.clip, mode="clamp")  # -clamp(ratio) * A
    return (s.reward_weight * surrogate + s.kl_weight * pm.l2_anchor(mu, log_std)).sum()


def run_paper_loop(sampler, reward, prompts: list[str], s: PaperLoopSettings, *, seed: int = 0, log=print,
                   log_every: int = 256, on_row=None) -> dict:
    """Run the released loop for every prompt at once. Returns ``mean``/``std`` ``(P, *latent_shape)`` (the mean
    upsampled to the latent), ``mean_param`` ``(P, *mean_shape)`` (the learned parameter; equal to ``mean`` at full
    resolution), the ``history`` (one row per ``log_every`` iterations) and the settings. ``on_row``: called with each
    history row as it is made (e.g. :meth:`find_rl.run.tracking.RunLog.log_row`)."""
    shape = tuple(sampler.latent_shape)
    d, p = int(np.prod(shape)), len(prompts)
    param_shape = latent_mean.mean_shape(shape, s.mean_resolution)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    mu_param = torch.zeros(p, *param_shape, requires_grad=True)
    log_std = torch.zeros(p, d, requires_grad=True)
    opt = torch.optim.AdamW([mu_param, log_std], lr=s.lr, weight_decay=0.0)
    onehot = torch.eye(p)
    calib = RewardCalibrator(latent_shape=shape, prompt_dim=p, normalize="none", lr=s.value_lr, steps=1, history=1)
    group = torch.arange(p)
    history, t0, window = [], time.perf_counter(), []
    for it in range(s.iterations):
        mu = latent_mean.upsample(mu_param, shape).flatten(1)  # (P, D); the parameter itself at full resolution
        with torch.no_grad():
            z = mu + log_std.exp() * torch.randn(p, d, generator=gen)
        out = render_and_score(sampler, reward, z.reshape(p, *shape), prompts)
        r = torch.as_tensor(out["score"], dtype=torch.float32)
        adv = calib.update(dist_inputs=torch.cat([mu, log_std], 1).detach(), prompt_feat=onehot, group=group, rewards=r).advantages
        loss = paper_loss(z, mu, log_std, adv, s)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        window.append(out.get("aligned", np.zeros(p, bool)).astype(float))
        if (it + 1) % log_every == 0 or it + 1 == s.iterations:  # one row per block of iterations (one sample each)
            a = np.mean(window, 0)
            history.append({"iteration": it + 1, "alignment": float(a.mean()), "alignment_per_prompt": dict(zip(prompts, a.tolist())),
                            "reward_evals_per_prompt": it + 1, "wall_s": time.perf_counter() - t0})
            if on_row is not None:
                on_row(history[-1])
            window = []
            if log:
                log(f"paper-loop iter {it + 1:>5}/{s.iterations}  align (last {log_every}) {a.mean():.3f}  "
                    f"|mu| {latent_mean.upsample(mu_param.detach(), shape).abs().mean():.3f}")
    with torch.no_grad():
        mean = latent_mean.upsample(mu_param, shape).reshape(p, *shape)
    return {"mean": mean.clone(), "std": log_std.detach().exp().reshape(p, *shape), "mean_param": mu_param.detach().clone(),
            "history": history, "settings": asdict(s)}
