"""How much diversity an aligned distribution *can* keep: rejection sampling from the frozen model's N(0, I).

How to run::

    python bench/diversity_ceiling.py --samples 1536 --threads 2 [--policy runs/find-s0]

For each rare prompt it renders ``--samples`` images from N(0, I), keeps the ones the detector calls aligned
(best-of-N at its limit) and compares their diversity (mean pairwise L2, as ``find_rl.evaluate`` measures it) with
that of all base images. With ``--policy`` it also prints the L2 norm of each learned mean, to compare with the
norm of a typical N(0, I) sample (sqrt(D)).
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, default=1536)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--policy", default=None, help="a find_rl.train output folder: print its means' norms")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from find_rl.evaluate import diversity
    from find_rl.policies.export import load_policy
    from find_rl.rewards.registry import WorldReward
    from find_rl.diffusion.sampler import DiffusionSampler
    from find_rl.worlds.shapes.world import rare_prompts

    sampler = DiffusionSampler.from_pretrained("shapes")
    reward = WorldReward("shapes")
    pol = load_policy(args.policy) if args.policy else None
    gen = torch.Generator().manual_seed(args.seed)
    print(f"sqrt(D) = {math.sqrt(sampler.latent_dim):.1f} (norm of a typical N(0, I) sample)")
    print("| prompt | base diversity (256) | aligned base samples | their diversity (≤ 256) | kept |" + (" FIND mean norm |" if pol else ""))
    print("|---|---|---|---|---|" + ("---|" if pol else ""))
    for prompt in rare_prompts():
        z = torch.randn(args.samples, *sampler.latent_shape, generator=gen)
        imgs = np.concatenate([sampler.sample(z[i:i + 512], [prompt] * len(z[i:i + 512])).images for i in range(0, len(z), 512)])
        ok = reward.score(imgs, [prompt] * len(imgs))["aligned"]
        d_all, d_ok = diversity(imgs[:256]), diversity(imgs[ok][:256])
        row = f"| {prompt} | {d_all:.2f} | {int(ok.sum())} / {len(ok)} | {d_ok:.2f} | {d_ok / d_all:.0%} |"
        if pol:
            row += f" {pol.mean[pol.prompts.index(prompt)].norm():.1f} |"
        print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
