"""The cross-entropy method on the initial noise: per prompt, iterated elite means (and optionally stds).

Each iteration draws ``population`` noises per prompt from N(mean_c, std_c^2), renders and scores them, keeps the
top ``elite_frac`` by reward and moves the mean toward the elites' mean::

    mean <- (1 - smoothing) * mean + smoothing * mean(elites)
    std  <- (1 - smoothing) * std  + smoothing * std(elites)      (only with learn_std; floored at min_std)

Ties between equally scored samples (every aligned image scores 1 under the shapes reward) are broken at random.
The budget is ``iterations * population`` reward evaluations per prompt, the same accounting as FIND's.

``mean_resolution`` r (None: one mean per latent element, as before) gives CEM FIND's parametrisation: the mean
parameter m is C x r x r, the sampling mean is its bilinear upsampling U m (:mod:`find_rl.policies.latent_mean`, the same
interpolation as ``NoisePolicyModule``), and the elite mean is fitted in that space by least squares::

    mean(elites) -> pinv(U) mean(elites) = argmin_m sum_e ||z_e - U m||^2

which is CEM's own rule, the maximum-likelihood mean of N(U m, sigma^2 I) given the elites (exact whenever sigma
is constant within each channel, as the default sigma = 1), and equal to averaging the elites' least-squares
projections (pinv(U) is linear). Average-pooling the elites instead would be biased: pooling is not the inverse of
bilinear upsampling, so a pooled update moves the mean even when every elite already sits on it. In latent space the
sampled mean moves toward U pinv(U) mean(elites), the elite mean's orthogonal projection onto the upsampled means.
With ``learn_std`` the std stays per latent element, fitted to the elites around their own mean as before.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from find_rl.policies import latent_mean
from find_rl.baselines.scoring import render_and_score


@dataclass
class CEMSettings:
    iterations: int = 80
    population: int = 32  # samples per prompt per iteration
    elite_frac: float = 0.25
    smoothing: float = 0.5  # step toward the elite statistics (1 = jump to them)
    learn_std: bool = False  # default sigma = 1, as FIND's default policy
    min_std: float = 0.5
    mean_resolution: int | None = None  # r: learn a C x r x r mean, bilinearly upsampled (FIND's); None: full resolution

    def __post_init__(self):
        latent_mean.check_resolution(self.mean_resolution)
        if self.iterations < 1 or self.population < 2:
            raise ValueError(f"CEM needs iterations >= 1 and population >= 2, got {self.iterations}, {self.population}")
        if not 0 < self.elite_frac <= 1 or not 0 < self.smoothing <= 1:
            raise ValueError(f"elite_frac and smoothing must be in (0, 1], got {self.elite_frac}, {self.smoothing}")

    @property
    def num_elites(self) -> int:
        return max(1, int(round(self.elite_frac * self.population)))


def cem_update(mean: torch.Tensor, std: torch.Tensor, samples: torch.Tensor, scores: np.ndarray, s: CEMSettings, *,
               rng: np.random.Generator, latent_shape: tuple[int, ...] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One CEM step for one prompt: ``samples`` ``(K, D)`` with ``scores`` ``(K,)`` -> the new ``(mean, std)``.

    ``mean`` is the mean parameter, flattened: ``(D,)`` at full resolution, ``(C * r^n,)`` with ``s.mean_resolution``
    = r (then ``latent_shape`` is required); ``std`` is ``(D,)``."""
    order = np.lexsort((rng.random(len(scores)), -np.asarray(scores)))  # best first, ties in random order
    elites = samples[torch.as_tensor(order[: s.num_elites])]
    if s.mean_resolution is None:
        elite_mean = elites.mean(0)
    elif latent_shape is None:
        raise ValueError("cem_update needs latent_shape when mean_resolution is set")
    else:  # least squares in the low-resolution space (module docstring)
        elite_mean = latent_mean.fit(elites.mean(0, keepdim=True), latent_shape, s.mean_resolution).flatten()
    new_mean = (1 - s.smoothing) * mean + s.smoothing * elite_mean
    new_std = std
    if s.learn_std and len(elites) > 1:
        new_std = ((1 - s.smoothing) * std + s.smoothing * elites.std(0)).clamp(min=s.min_std)
    return new_mean, new_std


def run_cem(sampler, reward, prompts: list[str], s: CEMSettings, *, seed: int = 0, log=print, on_row=None) -> dict:
    """Run CEM for every prompt at once (one render call per iteration). Returns ``mean``/``std``
    ``(P, *latent_shape)`` (the mean upsampled to the latent), ``mean_param`` ``(P, *mean_shape)`` (the learned
    parameter; equal to ``mean`` at full resolution), the per-iteration ``history`` and the settings. ``on_row``: called
    with each history row as it is made (e.g. :meth:`find_rl.run.tracking.RunLog.log_row`)."""
    shape = tuple(sampler.latent_shape)
    d = int(np.prod(shape))
    param_shape = latent_mean.mean_shape(shape, s.mean_resolution)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    mean, std = torch.zeros(len(prompts), int(np.prod(param_shape))), torch.ones(len(prompts), d)

    def sampling_mean() -> torch.Tensor:  # (P, D): the parameter itself at full resolution, else upsampled
        return mean if s.mean_resolution is None else latent_mean.upsample(mean.reshape(-1, *param_shape), shape).flatten(1)

    flat_prompts = [p for p in prompts for _ in range(s.population)]
    history, t0 = [], time.perf_counter()
    for it in range(s.iterations):
        eps = torch.randn(len(prompts), s.population, d, generator=gen)
        z = sampling_mean()[:, None] + std[:, None] * eps
        out = render_and_score(sampler, reward, z.reshape(-1, *shape), flat_prompts)
        scores = out["score"].reshape(len(prompts), s.population)
        aligned = out.get("aligned", np.zeros(len(flat_prompts), bool)).reshape(len(prompts), s.population)
        for i in range(len(prompts)):
            mean[i], std[i] = cem_update(mean[i], std[i], z[i], scores[i], s, rng=rng, latent_shape=shape)
        row = {"iteration": it + 1, "reward_mean": float(scores.mean()), "alignment": float(aligned.mean()),
               "alignment_per_prompt": dict(zip(prompts, aligned.mean(1).tolist())),
               "reward_evals_per_prompt": (it + 1) * s.population, "wall_s": time.perf_counter() - t0}
        history.append(row)
        if on_row is not None:
            on_row(row)
        if log and ((it + 1) % 10 == 0 or it == 0):
            log(f"cem iter {it + 1:>3}/{s.iterations}  reward {row['reward_mean']:.3f}  align {row['alignment']:.3f}")
    return {"mean": sampling_mean().reshape(len(prompts), *shape), "std": std.reshape(len(prompts), *shape),
            "mean_param": mean.reshape(len(prompts), *param_shape).clone(), "history": history, "settings": asdict(s)}
