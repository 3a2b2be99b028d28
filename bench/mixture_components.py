"""How a learned mixture's images spread: within its components and between them, on the same fresh noise its run was
scored on (``evaluation_seed``). For a seeded mixture (``--mixture-seed-share``) this is the question its
"diversity kept" figure does not answer: its K components sit on K aligned noises of the frozen model, so the
images of one component are variations of one image, and the spread between components is borrowed from the frozen
model's draws.

Per prompt: the alignment; how many components draw at least one aligned image; the mean pairwise distance among
aligned images drawn by the *same* component and by *different* components, in pixels and on the world's factors
(object positions and sizes), each relative to the frozen model's own aligned images (the shipped reference, where
the sampler matches).

    python bench/mixture_components.py runs/seeded                   # the run's prompts, 256 draws, its scoring seed
    python bench/mixture_components.py runs/seeded --samples 512 --seed 1
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def pair_means(x: np.ndarray, comp: np.ndarray) -> tuple[float | None, float | None]:
    """Mean pairwise L2 distance of rows ``x`` among pairs of the same component and of different components."""
    from find_rl.evaluation.diversity import pairwise_distances

    if len(x) < 2:
        return None, None
    d = pairwise_distances(x).numpy()
    same = comp[:, None] == comp[None, :]
    off = ~np.eye(len(x), dtype=bool)
    within, between = d[same & off], d[~same]
    return (float(within.mean()) if within.size else None), (float(between.mean()) if between.size else None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("policy", help="a run folder (or its noise_policy.json) of a --policy-type mixture run")
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--seed", type=int, default=None, help="the run's seed (default: read from the policy)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import torch

    from find_rl.core.settings import SamplerSettings
    from find_rl.diffusion.sampler import DiffusionSampler, render
    from find_rl.evaluation.scoring import evaluation_seed, load_aligned_ceiling, world_for
    from find_rl.policies.export import load_policy
    from find_rl.policies.mixture import component_of

    torch.set_num_threads(args.threads)
    pol = load_policy(args.policy)
    if pol.family != "mixture":
        raise SystemExit(f"{args.policy} holds a {pol.family} policy; this measures --policy-type mixture runs")
    seed = args.seed if args.seed is not None else int(pol.training.get("seed", 0))
    settings = SamplerSettings.from_saved(pol.sampler)
    sampler = DiffusionSampler.from_pretrained(pol.model, settings)
    world = world_for(pol.model)
    reference = load_aligned_ceiling(pol.model, settings)
    prompts, s, shape = pol.prompts, args.samples, sampler.latent_shape
    eps = torch.randn((len(prompts), s, *shape), generator=torch.Generator().manual_seed(evaluation_seed(seed)))
    noise = pol.transform(list(range(len(prompts))), eps)
    rows = []
    for i, p in enumerate(prompts):
        comp = (component_of(s, pol.components) if pol.weights is None
                else component_of(s, pol.components, pol.weights[i : i + 1])[0]).numpy()
        images = render(sampler, noise[i], [p] * s)
        scored = world.score(images, [p] * s)
        ok = np.asarray(scored["aligned"], dtype=bool)
        pix_w, pix_b = pair_means(images[ok].reshape(int(ok.sum()), -1), comp[ok])
        factors = world.factors(images, [p] * s)
        fac_w = fac_b = None
        if factors is not None and ok.any():
            f = factors[ok][:, np.isfinite(factors[ok]).all(0)]
            fac_w, fac_b = pair_means(f, comp[ok])
        ref = reference.get(p, {})

        def rel(v, key):
            return None if v is None or not ref.get(key) else round(v / ref[key], 3)

        rows.append({"prompt": p, "alignment": round(float(ok.mean()), 3), "components": pol.components,
                     "components_with_aligned": int(len(set(comp[ok].tolist()))),
                     "pixel_within": rel(pix_w, "aligned_diversity"), "pixel_between": rel(pix_b, "aligned_diversity"),
                     "factor_within": rel(fac_w, "aligned_factor_diversity"),
                     "factor_between": rel(fac_b, "aligned_factor_diversity")})
        print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"policy": str(args.policy), "samples": s, "seed": evaluation_seed(seed),
                      "note": "within / between: mean pairwise distance among aligned images of the same / different "
                              "components, relative to the frozen model's aligned images (the shipped reference)"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
