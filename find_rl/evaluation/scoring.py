"""Scoring fresh samples, shared by every command and method: render N(mean, std^2) noise (N(0, I) for the frozen
model) through the frozen sampler and score the images with the world's exact scorer (:meth:`find_rl.worlds.World.score`;
the world of the model, else ``shapes``).

Per prompt: its ``split`` and ``category`` (the world's), alignment (the scorer's ``aligned`` rate) with a 95% Wilson
interval, strict alignment (the scorer's strict verdict),
diversity (mean pairwise L2 distance between that prompt's images, in [-1, 1] pixel units), the number of samples, and
the **aligned diversity**: the same distance among the aligned images only, with its 95% interval and their count
(:mod:`find_rl.evaluation.diversity`, the one definition). "Kept" compares it with the frozen model's own aligned images under the
same sampler settings (rejection sampling from N(0, I), :func:`aligned_ceiling`; shipped for the shapes model and its
default sampler in ``find_rl/worlds/shapes/model/aligned_ceiling.json``), so a method that fails a prompt cannot look diverse.
Base and learned policies go through exactly the same code; only the noise differs. No Ray.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from find_rl.diffusion.sampler import RENDER_CHUNK, DiffusionSampler, SamplerSettings, render
from find_rl.evaluation.diversity import aligned_entry, aligned_factor_entry, diversity, same_sampler, sampler_key
from find_rl.worlds import World, get_world, world_of_model


#: offsets of the evaluation noise streams from a run's seed: fresh noise, never the training stream
SCORING_SEED, CHECKPOINT_SEED = 10_000, 20_000


def evaluation_seed(seed: int, *, checkpoint: bool = False) -> int:
    """The noise seed that scores a run of ``seed``: the final scoring (``10000 + seed``), or the fresh-sample
    checkpoints during training (``20000 + seed``). Every method of a comparison is scored on the same streams."""
    return (CHECKPOINT_SEED if checkpoint else SCORING_SEED) + seed


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))


def world_for(model: str | None = None, world: str | World | None = None) -> World:
    """The world that scores a model's images: ``world`` when given, else the model's own world, else ``shapes``."""
    if isinstance(world, World):
        return world
    if world is not None:
        return get_world(world)
    return (world_of_model(model) if model is not None else None) or get_world("shapes")


def _labels(world: World, prompt: str) -> dict:
    """``split``, ``category`` and (the older flag) ``rare`` of a prompt; None where the world cannot parse it."""
    try:
        split = world.split_of(prompt)
        return {"split": split, "category": world.category_of(prompt), "rare": split == "rare"}
    except ValueError:
        return {"split": None, "category": None, "rare": None}


def evaluate_distributions(
    *,
    model: str = "shapes",
    prompts: list[str],
    mean: torch.Tensor | None = None,
    std: torch.Tensor | None = None,
    samples: int = 256,
    seed: int = 0,
    settings: SamplerSettings | None = None,
    sampler: DiffusionSampler | None = None,
    chunk: int = RENDER_CHUNK,
    return_images: int = 0,
    transform=None,
    world: str | World | None = None,
) -> dict[str, dict]:
    """Render ``samples`` images per prompt from N(mean_i, std_i^2) (N(0, I) when ``mean`` is None) and score them.

    Returns ``{prompt: {alignment, strict_alignment, ci_low, ci_high, diversity, samples, rare, aligned_diversity,
    aligned_count}}``; with
    ``return_images=k`` each entry also carries its first k images under ``"images"``.
    """
    if samples < 2:
        raise ValueError(f"samples must be >= 2, got {samples}")
    sampler = sampler or DiffusionSampler.from_pretrained(model, settings)
    shape = sampler.latent_shape
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn((len(prompts), samples, *shape), generator=gen)
    if transform is not None:  # a learned policy's map of the same base noise (a flow, ...): (P, S, *shape) -> same
        noise = transform(noise)
    elif mean is not None:
        noise = mean.reshape(len(prompts), 1, *shape) + std.reshape(len(prompts), 1, *shape) * noise
    flat_prompts = [p for p in prompts for _ in range(samples)]
    flat_noise = noise.reshape(-1, *shape)
    images = render(sampler, flat_noise, flat_prompts, chunk=chunk)
    scored = score_image_sets({p: images[i * samples : (i + 1) * samples] for i, p in enumerate(prompts)},
                              return_images=return_images, world=world_for(model, world))
    used = sampler_key(sampler.settings)  # which reference the aligned diversity may be compared with
    return {p: r | {"sampler": used} for p, r in scored.items()}


def score_image_sets(images: dict[str, np.ndarray], *, return_images: int = 0,
                     world: str | World | None = None) -> dict[str, dict]:
    """Score ``{prompt: (N, 3, H, W) images}`` with the world's exact scorer (``shapes`` unless given): the per-prompt
    entries of :func:`evaluate_distributions` (shared by every method of :mod:`find_rl.compare`)."""
    world = world_for(None, world)
    prompts = list(images)
    flat_prompts = [p for p in prompts for _ in range(len(images[p]))]
    flat_images = np.concatenate([images[p] for p in prompts])
    scored = world.score(flat_images, flat_prompts)
    lenient, strict = scored["aligned"], scored["strict"]  # one scoring pass serves both settings
    factors = world.factors(flat_images, flat_prompts)
    out, start = {}, 0
    for p in prompts:
        n = len(images[p])
        sl = slice(start, start + n)
        start += n
        k = int(lenient[sl].sum())
        lo, hi = wilson_interval(k, n)
        ok = lenient[sl]
        # among the aligned images only (None below MIN_ALIGNED): a method that fails a prompt does not look diverse
        out[p] = {"alignment": k / n, "strict_alignment": float(strict[sl].mean()), "ci_low": lo, "ci_high": hi,
                  "diversity": diversity(images[p]), "samples": n, **_labels(world, p), **aligned_entry(images[p][ok]),
                  "aligned_count": k}
        if factors is not None:  # diversity on what varies: the aligned images' object positions and sizes
            out[p] |= aligned_factor_entry(factors[sl][ok])
        if return_images:
            out[p]["images"] = images[p][:return_images]
    return out


def evaluate_base(*, model: str = "shapes", prompts: list[str] | None = None, samples: int = 256, seed: int = 0,
                  settings: SamplerSettings | None = None, world: str | None = None) -> dict:
    """The frozen model under N(0, I) noise, on ``prompts`` (default: the world's evaluation set)."""
    w = world_for(model, world)
    settings = (settings or SamplerSettings()).resolved(w.name)  # the world's own sampler unless given
    prompts = prompts or w.eval_prompts()
    res = evaluate_distributions(model=model, prompts=prompts, samples=samples, seed=seed, settings=settings, world=w)
    return {"policy": "base", "model": model, "samples": samples, "seed": seed, "sampler": settings.to_dict(), "prompts": res}


def evaluate_policy(policy_dir: str, *, samples: int = 256, seed: int = 0, prompts: list[str] | None = None,
                    model: str | None = None, device: str | None = None, world: str | None = None) -> dict:
    from find_rl.policies.export import load_policy

    pol = load_policy(policy_dir)
    settings = SamplerSettings.from_saved(pol.sampler, **({"device": device} if device else {}))
    if not prompts and answers_any_prompt(pol) and world_of_model(model or pol.model) is not None:
        prompts = world_for(model or pol.model, world).eval_prompts()  # its splits, held-out ones included
    prompts = prompts or pol.prompts
    serve_prompts(pol, prompts, model=model)
    idx = [pol.index(p) for p in prompts]
    res = evaluate_distributions(model=model or pol.model, prompts=prompts, transform=lambda u: pol.transform(idx, u), samples=samples,
                                 seed=seed, settings=settings, world=world)
    return {"policy": str(policy_dir), "model": model or pol.model, "samples": samples, "seed": seed, "sampler": settings.to_dict(),
            "prompts": res}


def answers_any_prompt(policy) -> bool:
    """Whether an exported policy reads the prompt's text (the amortised one, the flow on the embedding)."""
    return getattr(policy, "text_features", None) is not None


def serve_prompts(policy, prompts: list[str], *, model: str | None = None) -> None:
    """Make ``policy`` answer ``prompts``: a policy that reads the text gets the new prompts' text features from the
    frozen model's own encoder (checked against the model's world first); any other policy is left as it is (its
    ``index`` names the prompts it has)."""
    new = [p for p in dict.fromkeys(prompts) if p not in policy.prompts]
    if not new or not answers_any_prompt(policy):
        return
    from find_rl.core.observation import text_features
    from find_rl.diffusion.models import load_pipeline

    model = model or policy.model
    world = world_of_model(model)
    if world is not None:
        for p in new:
            world.check_prompt(p)
    policy.add_prompts(new, text_features(load_pipeline(model), new, policy.text_features))


CEILING_FILE = "aligned_ceiling.json"


def aligned_ceiling(sampler: DiffusionSampler, prompts: list[str], *, min_aligned: int = 30, max_samples: int = 32768,
                    chunk: int = 512, seed: int = 123, world: str | World | None = None) -> dict[str, dict]:
    """The frozen model's own aligned images per prompt (rejection sampling from N(0, I)): their diversity and count.

    Renders chunks until ``min_aligned`` aligned images (at most ``max_samples``) and measures at most 256 of them.
    Returns ``{prompt: {"aligned_diversity", "aligned_diversity_ci", "aligned_count", "samples"}}`` (None where fewer
    than ``MIN_ALIGNED`` were found), plus ``aligned_factor_diversity`` and its interval for a world with factors."""
    gen = torch.Generator().manual_seed(seed)
    world = world_for(None, world)
    out = {}
    for p in prompts:
        kept, n = [], 0
        while sum(len(k) for k in kept) < min_aligned and n < max_samples:
            z = torch.randn((chunk, *sampler.latent_shape), generator=gen)
            imgs = sampler.sample(z, [p] * chunk).images
            kept.append(imgs[world.score(imgs, [p] * chunk)["aligned"]])
            n += chunk
        ok = np.concatenate(kept)
        out[p] = {**aligned_entry(ok[:256]), "aligned_count": int(len(ok)), "samples": n}
        factors = world.factors(ok[:256], [p] * len(ok[:256])) if len(ok) else None
        if factors is not None:
            out[p] |= aligned_factor_entry(factors)
    return out


def load_aligned_reference(model: str = "shapes") -> dict:
    """A model folder's shipped reference file: ``{"sampler": {...}, "prompts": {prompt: {...}}}`` (``{}`` if none)."""
    import json

    from find_rl.diffusion.models import resolve_model

    path = Path(resolve_model(model)) / CEILING_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def load_aligned_ceiling(model: str = "shapes", settings: SamplerSettings | None = None) -> dict[str, dict]:
    """The shipped reference (rejection ceiling) of a model folder for these sampler settings (the defaults when None):
    ``{}`` when the folder ships none, or when it was made under other sampler settings (eta, steps, guidance,
    scheduler), so a run with another sampler reports "—" rather than a ratio against the wrong images."""
    data = load_aligned_reference(model)
    made = data.get("sampler")
    world = world_of_model(model)
    used = (settings or SamplerSettings()).resolved(world.name if world else None)
    if made is None or not same_sampler(sampler_key(used), made):
        return {}
    return data["prompts"]
