"""Probe (issue 3, diversity): does a translation mixture of the learned mean keep diversity at high alignment?

Policy per prompt: pi(z) = 1/K sum_k N(z; S_k mu, I), S_k = a translation of the mean by (dy, dx) in [-r, r]^2 with
zero fill (K = (2r + 1)^2), mu at 4 x 4 per channel upsampled as FIND's default. Trained by plain PyTorch PPO (per-
element mean log-density, clip 0.2, 4 epochs, Adam lr 0.05, per-prompt normalised advantages r - mean), 80 iterations
x 32 samples per prompt (FIND's budget), on the shapes world's rare prompts; scored on 256 fresh samples per prompt.
Not part of the product: it decides whether the mixture is worth an RLlib module.
``--components K`` instead learns K free means per prompt (radius 0), the component that drew a sample being part of
the action (log pi(k, z) = -log K + log N(z; mu_k, I)), so that the components separate through their own samples.

    python bench/shift_mixture_probe.py --radius 2 --threads 2
    python bench/shift_mixture_probe.py --radius 0 --components 2 --threads 2
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from find_rl.evaluate import evaluate_distributions, score_image_sets
from find_rl.rewards.registry import make_reward
from find_rl.diffusion.sampler import DiffusionSampler
from find_rl.worlds.shapes.world import rare_prompts


def shifts(r: int) -> list[tuple[int, int]]:
    return [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)]


def translate(mu: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """(..., H, W) shifted by (dy, dx) with zero fill."""
    h, w = mu.shape[-2:]
    p = F.pad(mu, (abs(dx), abs(dx), abs(dy), abs(dy)))
    return p[..., abs(dy) - dy : abs(dy) - dy + h, abs(dx) - dx : abs(dx) - dx + w]


def all_means(mu_low: torch.Tensor, offs) -> torch.Tensor:
    """(P, C, r, r) -> (P, K, D): every translated, upsampled mean."""
    mu = F.interpolate(mu_low, size=(16, 16), mode="bilinear", align_corners=False)
    return torch.stack([translate(mu, dy, dx) for dy, dx in offs], 1).flatten(2)


def mean_logp(z: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """Per-element mean log-density of z (N, D) under its prompt's mixture means (N, K, D), sigma = 1."""
    d = z.shape[-1]
    sq = ((z[:, None] - means) ** 2).sum(-1)  # (N, K)
    return (torch.logsumexp(-0.5 * sq, 1) - math.log(means.shape[1])) / d - 0.5 * math.log(2 * math.pi)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--radius", type=int, default=2)
    ap.add_argument("--components", type=int, default=1, help="free means per prompt (hard assignment)")
    ap.add_argument("--iterations", type=int, default=80)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    prompts, n, offs = rare_prompts(), 32, shifts(a.radius)
    sampler, reward = DiffusionSampler.from_pretrained("shapes"), make_reward("shapes")
    kc = a.components
    if kc > 1 and a.radius:
        raise SystemExit("--components > 1 needs --radius 0")
    mu_low = torch.zeros(len(prompts) * kc, 3, 4, 4, requires_grad=True)  # row p * kc + j: prompt p, component j
    opt = torch.optim.Adam([mu_low], lr=a.lr)
    pid = torch.arange(len(prompts)).repeat_interleave(n)
    t0 = time.perf_counter()
    for it in range(a.iterations):
        with torch.no_grad():
            comp = pid * kc + torch.randint(kc, (len(pid),))  # the component row each sample is drawn from
            means = all_means(mu_low, offs)  # (P * kc, K, D)
            k = torch.randint(len(offs), (len(pid),))
            z = means[comp, k] + torch.randn(len(pid), means.shape[-1])
            old = mean_logp(z, means[comp])
        scored = reward.score(sampler.sample(z.reshape(-1, 3, 16, 16), [prompts[i] for i in pid]).images, [prompts[i] for i in pid])
        r = torch.as_tensor(scored["score"]).reshape(len(prompts), n)
        adv = ((r - r.mean(1, keepdim=True)) / r.std(1, keepdim=True).clamp(min=0.05)).flatten()
        for _ in range(4):
            ratio = torch.exp(mean_logp(z, all_means(mu_low, offs)[comp]) - old)
            loss = -torch.min(ratio * adv, ratio.clamp(0.8, 1.2) * adv).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        if (it + 1) % 10 == 0:
            print(f"iter {it + 1}: train alignment {scored['aligned'].mean():.3f}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    base = evaluate_distributions(prompts=prompts, samples=256, seed=10_000, sampler=sampler)
    gen = torch.Generator().manual_seed(10_000)
    with torch.no_grad():
        means = all_means(mu_low, offs)
        imgs = {}
        for i, p in enumerate(prompts):
            k = torch.randint(len(offs), (256,), generator=gen)
            c = i * kc + torch.randint(kc, (256,), generator=gen)
            imgs[p] = sampler.sample((means[c, k] + torch.randn(256, means.shape[-1], generator=gen)).reshape(-1, 3, 16, 16), [p] * 256).images
    res = score_image_sets(imgs)
    for p in prompts:
        print(f"{p:18s} alignment {res[p]['alignment']:.3f} strict {res[p]['strict_alignment']:.3f} "
              f"diversity kept {res[p]['diversity'] / base[p]['diversity']:.0%}")
    print(f"mean: alignment {np.mean([res[p]['alignment'] for p in prompts]):.3f}  strict "
          f"{np.mean([res[p]['strict_alignment'] for p in prompts]):.3f}  diversity kept "
          f"{np.mean([res[p]['diversity'] / base[p]['diversity'] for p in prompts]):.0%}  (radius {a.radius}, components {kc}, {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
