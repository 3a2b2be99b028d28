"""The cross-entropy method on the initial noise: per prompt, iterated elite means (and optionally stds).

Each iteration draws ``population`` noises per prompt from N(mean_c, std_c^2), renders and scores them, keeps the
top ``elite_frac`` by reward and moves the mean toward the elites' mean::

    mean <- (1 - smoothing) * mean + smoothing * mean(elites)
    std  <- (1 - smoothing) * std  + smoothing * std(elites)      (only with learn_std; floored at min_std)

Ties between equally scored samples (every aligned image scores 1 under the shapes reward) are broken at random.
The budget is ``iterations * population`` reward evaluations per prompt, the same accounting as FIND's.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from find_rl.baselines.scoring import render_and_score


@dataclass
class CEMSettings:
    iterations: int = 80
    population: int = 32  # samples per prompt per iteration
    elite_frac: float = 0.25
    smoothing: float = 0.5  # step toward the elite statistics (1 = jump to them)
    learn_std: bool = False  # default sigma = 1, as FIND's default policy
    min_std: float = 0.5

    def __post_init__(self):
        if self.iterations < 1 or self.population < 2:
            raise ValueError(f"CEM needs iterations >= 1 and population >= 2, got {self.iterations}, {self.population}")
        if not 0 < self.elite_frac <= 1 or not 0 < self.smoothing <= 1:
            raise ValueError(f"elite_frac and smoothing must be in (0, 1], got {self.elite_frac}, {self.smoothing}")

    @property
    def num_elites(self) -> int:
        return max(1, int(round(self.elite_frac * self.population)))


def cem_update(mean: torch.Tensor, std: torch.Tensor, samples: torch.Tensor, scores: np.ndarray, s: CEMSettings, *,
               rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One CEM step for one prompt: ``samples`` ``(K, D)`` with ``scores`` ``(K,)`` -> the new ``(mean, std)``."""
    order = np.lexsort((rng.random(len(scores)), -np.asarray(scores)))  # best first, ties in random order
    elites = samples[torch.as_tensor(order[: s.num_elites])]
    new_mean = (1 - s.smoothing) * mean + s.smoothing * elites.mean(0)
    new_std = std
    if s.learn_std and len(elites) > 1:
        new_std = ((1 - s.smoothing) * std + s.smoothing * elites.std(0)).clamp(min=s.min_std)
    return new_mean, new_std


def run_cem(sampler, reward, prompts: list[str], s: CEMSettings, *, seed: int = 0, log=print) -> dict:
    """Run CEM for every prompt at once (one render call per iteration). Returns ``mean``/``std``
    ``(P, *latent_shape)``, the per-iteration ``history`` and the settings."""
    shape = sampler.latent_shape
    d = int(np.prod(shape))
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    mean, std = torch.zeros(len(prompts), d), torch.ones(len(prompts), d)
    flat_prompts = [p for p in prompts for _ in range(s.population)]
    history, t0 = [], time.perf_counter()
    for it in range(s.iterations):
        eps = torch.randn(len(prompts), s.population, d, generator=gen)
        z = mean[:, None] + std[:, None] * eps
        out = render_and_score(sampler, reward, z.reshape(-1, *shape), flat_prompts)
        scores = out["score"].reshape(len(prompts), s.population)
        aligned = out.get("aligned", np.zeros(len(flat_prompts), bool)).reshape(len(prompts), s.population)
        for i in range(len(prompts)):
            mean[i], std[i] = cem_update(mean[i], std[i], z[i], scores[i], s, rng=rng)
        row = {"iteration": it + 1, "reward_mean": float(scores.mean()), "alignment": float(aligned.mean()),
               "alignment_per_prompt": dict(zip(prompts, aligned.mean(1).tolist())),
               "reward_evals_per_prompt": (it + 1) * s.population, "wall_s": time.perf_counter() - t0}
        history.append(row)
        if log and ((it + 1) % 10 == 0 or it == 0):
            log(f"cem iter {it + 1:>3}/{s.iterations}  reward {row['reward_mean']:.3f}  align {row['alignment']:.3f}")
    return {"mean": mean.reshape(len(prompts), *shape), "std": std.reshape(len(prompts), *shape), "history": history,
            "settings": asdict(s)}
