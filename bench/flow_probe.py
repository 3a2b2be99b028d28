"""Probe (issue 16, diversity): does a per-prompt coupling flow with a true reverse-KL regulariser keep diversity
at high alignment on the shapes world?

This example shows FIND's flow policy (:class:`find_rl.policies.flow.ConditionalCouplingFlow`, one flow for the six rare
prompts with a learned context vector and shift/scale per prompt) trained in plain PyTorch at FIND's budget (80
iterations x 32 samples per prompt), with the loss the RLlib learner would use:

    loss = PPO clipped surrogate on the per-element log-ratio (log q_new(z) - log q_behaviour(z)) / D, 4 epochs, clip 0.2
         + beta * KL(q_c || N(0, I)) / D            (find_rl.policies.flow.reverse_kl: 8 fresh reparameterised draws per prompt)
         - replay * mean_i w_i log q(z_i | c_i) / D  (optional: the last 256 aligned noises per prompt, self-normalised
                                                      importance weights w_i ∝ N(z_i) / q_behaviour(z_i) per prompt)

Advantages are per-prompt normalised rewards (r - mean) / std over the 32 samples (no calibration model), as in
``bench/shift_mixture_probe.py``. The shift/scale, and the coupling nets plus prompt contexts, take separate
learning rates. Scored on 256 fresh samples per prompt: alignment, diversity kept (all images vs the frozen model's
256), and diversity among the aligned images only (vs the same base figure; the rejection-sampling ceiling in
bench/RESULTS.md is 81-97%), with their count. Not part of the product: it decides whether the flow module is worth
wiring into the learner.

How to run this script::

    OMP_NUM_THREADS=2 python bench/flow_probe.py --beta 0.05 --threads 2
    OMP_NUM_THREADS=2 python bench/flow_probe.py --beta 0.05 --replay 2 --threads 2
    python bench/flow_probe.py --iterations 2 --eval-samples 16      # a quick smoke run

Results to expect: see bench/RESULTS.md (Diversity). Reference at this budget: FIND's Gaussian 0.914 alignment with
35% diversity kept; with a KL anchor 0.697 / 53%.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from find_rl.evaluate import diversity, evaluate_distributions, score_image_sets
from find_rl.policies.flow import ConditionalCouplingFlow, replay_weights, reverse_kl
from find_rl.rewards.registry import make_reward
from find_rl.diffusion.sampler import DiffusionSampler
from find_rl.worlds.shapes.world import rare_prompts


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--beta", type=float, default=0.05, help="weight of the per-element reverse KL to N(0, I)")
    ap.add_argument("--replay", type=float, default=0.0, help="weight of the importance-weighted replay of aligned noises")
    ap.add_argument("--coupling", default="spline", choices=["affine", "spline"])
    ap.add_argument("--resolution", type=int, default=4, help="flow over the C x r x r block means (0: full resolution)")
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--lr-affine", type=float, default=0.02, help="Adam lr of the per-prompt shift and log-scale")
    ap.add_argument("--lr-coupling", type=float, default=0.003, help="Adam lr of the coupling nets and prompt contexts")
    ap.add_argument("--iterations", type=int, default=80)
    ap.add_argument("--samples", type=int, default=32, help="samples per prompt per iteration")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--clip-param", type=float, default=0.2)
    ap.add_argument("--kl-draws", type=int, default=8, help="fresh draws per prompt for the KL estimate")
    ap.add_argument("--eval-samples", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--replay-size", type=int, default=256, help="most recent aligned noises kept per prompt for the replay")
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="stop training at this wall time (the CPU may be shared) and still evaluate; says how far it got")
    return ap.parse_args()


def gaussian_update_seconds(z: torch.Tensor, pid: torch.Tensor, adv: torch.Tensor, n_prompts: int, epochs: int) -> float:
    """Time FIND's Gaussian update (4 x 4 mean per prompt, sigma = 1, per-element ratio) on the same batch."""
    mu_low = torch.zeros(n_prompts, 3, 4, 4, requires_grad=True)
    opt = torch.optim.Adam([mu_low], lr=0.05)
    t0 = time.perf_counter()

    def logp() -> torch.Tensor:
        mu = torch.nn.functional.interpolate(mu_low, size=(16, 16), mode="bilinear", align_corners=False).flatten(1)[pid]
        return (-0.5 * (z - mu) ** 2).mean(1)

    old = logp().detach()
    for _ in range(epochs):
        ratio = torch.exp(logp() - old)
        loss = -torch.min(ratio * adv, ratio.clamp(0.8, 1.2) * adv).mean() + 0.01 * (mu_low**2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def main() -> None:
    a = parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    prompts, n = rare_prompts(), a.samples
    sampler, reward = DiffusionSampler.from_pretrained("shapes"), make_reward("shapes")
    flow = ConditionalCouplingFlow(latent_shape=sampler.latent_shape, num_conditions=len(prompts),
                                   resolution=a.resolution or None, num_blocks=a.blocks, hidden=a.hidden, coupling=a.coupling)
    groups = flow.param_groups()
    opt = torch.optim.Adam([{"params": groups["affine"], "lr": a.lr_affine},
                            {"params": groups["couplings"] + groups["context"], "lr": a.lr_coupling}])
    dim, all_prompts = flow.dim, torch.arange(len(prompts))
    pid = all_prompts.repeat_interleave(n)
    buffer_z, buffer_p, buffer_logp = torch.empty(0, dim), torch.empty(0, dtype=torch.long), torch.empty(0)
    t_render = t_update = t_gauss = 0.0
    t0 = time.perf_counter()
    done = n_aligned = 0
    for it in range(a.iterations):
        if a.max_minutes is not None and time.perf_counter() - t0 > 60 * a.max_minutes:
            print(f"stopping training at the {a.max_minutes} min limit after {done} of {a.iterations} iterations", flush=True)
            break
        # 1. Sample from the behaviour flow, render, score.
        with torch.no_grad():
            z, logp_old = flow.sample(all_prompts, n)
        ts = time.perf_counter()
        names = [prompts[i] for i in pid]
        scored = reward.score(sampler.sample(z.reshape(-1, *sampler.latent_shape), names).images, names)
        t_render += time.perf_counter() - ts
        r = torch.as_tensor(scored["score"], dtype=torch.float32).reshape(len(prompts), n)
        adv = ((r - r.mean(1, keepdim=True)) / r.std(1, keepdim=True).clamp(min=0.05)).flatten()
        aligned = torch.as_tensor(scored["aligned"], dtype=torch.bool)
        buffer_z, buffer_p = torch.cat([buffer_z, z[aligned]]), torch.cat([buffer_p, pid[aligned]])
        buffer_logp = torch.cat([buffer_logp, logp_old[aligned]])
        keep = torch.cat([torch.nonzero(buffer_p == i).squeeze(1)[-a.replay_size :] for i in range(len(prompts))])
        buffer_z, buffer_p, buffer_logp = buffer_z[keep], buffer_p[keep], buffer_logp[keep]
        n_aligned += int(aligned.sum())
        w = replay_weights(buffer_z, buffer_logp, buffer_p) if a.replay and len(buffer_z) else None
        # 2. PPO epochs on the per-element log-ratio + beta * per-element reverse KL (- replay term).
        ts = time.perf_counter()
        for _ in range(a.epochs):
            ratio = torch.exp(((flow.log_prob(z, pid) - logp_old) / dim).clamp(-20, 20))
            surrogate = -torch.min(ratio * adv, ratio.clamp(1 - a.clip_param, 1 + a.clip_param) * adv).mean()
            kl = reverse_kl(flow, all_prompts, a.kl_draws).mean()
            loss = surrogate + a.beta * kl / dim
            if w is not None:
                loss = loss - a.replay * (w * flow.log_prob(buffer_z, buffer_p)).mean() / dim
            opt.zero_grad()
            loss.backward()
            opt.step()
        t_update += time.perf_counter() - ts
        t_gauss += gaussian_update_seconds(z, pid, adv, len(prompts), a.epochs)
        done = it + 1
        if done % 10 == 0:
            print(f"iter {done}: train alignment {aligned.float().mean():.3f}  KL {kl.item():.1f} nats  "
                  f"aligned noises so far {n_aligned}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    train_s = time.perf_counter() - t0

    # 3. Score 256 fresh samples per prompt against the frozen model's own 256.
    base = evaluate_distributions(prompts=prompts, samples=a.eval_samples, seed=10_000, sampler=sampler)
    gen = torch.Generator().manual_seed(10_000)
    images = {}
    with torch.no_grad():
        for i, p in enumerate(prompts):
            z, _ = flow.sample(torch.tensor([i]), a.eval_samples, generator=gen)
            images[p] = sampler.sample(z.reshape(-1, *sampler.latent_shape), [p] * a.eval_samples).images
        kl_final = reverse_kl(flow, all_prompts, 512).tolist()
    res = score_image_sets(images)
    rows = []
    for i, p in enumerate(prompts):
        ok = reward.score(images[p], [p] * len(images[p]))["aligned"].astype(bool)
        aligned_div = diversity(images[p][ok]) / base[p]["diversity"] if ok.sum() >= 2 else float("nan")
        rows.append((res[p]["alignment"], res[p]["diversity"] / base[p]["diversity"], aligned_div))
        print(f"{p:18s} alignment {res[p]['alignment']:.3f} (base {base[p]['alignment']:.3f})  diversity kept "
              f"{rows[-1][1]:.0%}  aligned-only diversity kept {aligned_div:.0%} ({int(ok.sum())} images)  "
              f"KL {kl_final[i]:.1f} nats")
    m = np.nanmean(np.array(rows), axis=0)
    iters = max(done, 1)
    print(f"mean: alignment {m[0]:.3f}  diversity kept {m[1]:.0%}  aligned-only diversity kept {m[2]:.0%}  "
          f"(beta {a.beta}, replay {a.replay}, {a.coupling}, resolution {a.resolution or 'full'}, {done} iterations, "
          f"train {train_s:.0f} s, total {time.perf_counter() - t0:.0f} s)")
    print(f"per iteration: render+score {t_render / iters:.2f} s, flow update {t_update / iters:.3f} s, Gaussian update "
          f"{t_gauss / iters:.3f} s -> flow iteration / Gaussian iteration = "
          f"{(t_render + t_update) / max(t_render + t_gauss, 1e-9):.2f}")


if __name__ == "__main__":
    main()
