"""Render images with the frozen model from N(0, I) noise (``--policy base``) or from a learned noise policy.

How to run::

    python -m find_rl.generate --policy base --prompt "a green circle" --num-images 16 --out out/base
    python -m find_rl.generate --policy runs/find --prompt "a green circle" --num-images 16 --out out/find

The initial noise is drawn from the policy's Gaussian for that prompt and handed to a plain diffusers pipeline
through ``latents=`` (the shapes pipeline or any Stable Diffusion pipeline): inference costs one sample per
image and needs only torch, diffusers and the exported files, no Ray.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from find_rl.core import fields
from find_rl.core.fields import at_least, one_of, setting
from find_rl.core.settings import WORLD_NAMES


@dataclass
class GenerateSettings:
    """What ``python -m find_rl.generate`` renders (its flags are generated from these declarations)."""

    prompt: str = setting(help="the prompt to render")
    out: Path = setting(cli={"type": Path}, help="folder for the PNGs (GIFs for video pipelines) and grid.png")
    policy: str = setting("base", help="'base' or a folder written by find_rl.train")
    world: str | None = setting(None, check=one_of(*WORLD_NAMES), cli={"choices": WORLD_NAMES},
                                help="for base: the world whose model renders (default shapes)")
    num_images: int = setting(8, check=at_least(1))
    model: str | None = setting(None, help="override the policy's model (a pipeline folder or hub id)")
    seed: int = setting(0)
    scale: int | None = setting(None, check=at_least(1), cli={"type": int},
                                help="upscale factor for small images (default: to >= 128 px)")
    device: str | None = setting(None, help="override the policy's sampler device (e.g. cpu, cuda)")
    threads: int = setting(2, check=at_least(1))

    def __post_init__(self):
        fields.check_fields(self)


def generate(*, policy: str, prompt: str, num_images: int, out: Path, model: str | None = None, seed: int = 0,
             scale: int | None = None, batch_size: int = 64, device: str | None = None, world: str | None = None) -> list[Path]:
    """Render ``num_images`` PNGs (GIFs for video) of ``prompt`` into ``out``, plus ``grid.png`` captioned with the prompt."""
    from find_rl.diffusion.sampler import DiffusionSampler, SamplerSettings
    from find_rl.diffusion.images import to_pil

    if num_images < 1:
        raise ValueError(f"--num-images must be >= 1, got {num_images}")
    if scale is not None and scale < 1:
        raise ValueError(f"--scale must be >= 1, got {scale}")
    if not prompt.strip():
        raise ValueError("--prompt is empty; give a prompt such as 'a green circle'")
    gen = torch.Generator().manual_seed(seed)
    pol = None
    settings = {}
    if policy != "base":
        from find_rl.evaluation.scoring import serve_prompts
        from find_rl.policies.export import load_policy

        pol = load_policy(policy)
        serve_prompts(pol, [prompt], model=model)  # a policy that reads the text answers any prompt of its model
        pol.index(prompt)  # a clear error for a prompt a per-prompt policy was not trained on
        settings = dict(pol.sampler)
    if device is not None:
        settings["device"] = device
    sampler = DiffusionSampler.from_pretrained(model or (pol.model if pol else world or "shapes"), SamplerSettings.from_saved(settings)
                                               if pol else SamplerSettings(**settings))
    if pol is not None and tuple(pol.latent_shape) != tuple(sampler.latent_shape):
        raise ValueError(f"policy latent shape {pol.latent_shape} does not fit this model (latent {sampler.latent_shape})")
    noise = pol.sample(prompt, num_images, generator=gen) if pol else torch.randn((num_images, *sampler.latent_shape), generator=gen)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create output folder {out} ({e.strerror}); choose a writable --out") from None
    paths = []
    for start in range(0, num_images, batch_size):
        chunk = noise[start : start + batch_size]
        images = sampler.sample(chunk, [prompt] * len(chunk)).images  # plain pipeline call with latents=
        up = scale or max(1, 128 // images.shape[-1])
        for i, item in enumerate(images):
            if item.ndim == 4:  # a video (F, 3, H, W): an animated GIF at 8 frames/s
                frames = to_pil(item, scale=up)
                path = out / f"{start + i:04d}.gif"
                frames[0].save(path, save_all=True, append_images=frames[1:], duration=125, loop=0)
            else:
                path = out / f"{start + i:04d}.png"
                to_pil(item[None], scale=up)[0].save(path)
            paths.append(path)
    stills = [pth for pth in paths if pth.suffix == ".png"]
    if stills:
        from find_rl.evaluation.report import captioned_grid

        captioned_grid([str(pth) for pth in stills], prompt).save(out / "grid.png")
    return paths


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m find_rl.generate", description="Render images from base or learned noise.")
    fields.add_arguments(p, GenerateSettings)
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    for required in ("prompt", "out"):
        if getattr(args, required) is None:
            p.error(f"the following arguments are required: --{required}")
    try:
        s = fields.from_args(GenerateSettings, args)
        torch.set_num_threads(s.threads)
        paths = generate(policy=s.policy, prompt=s.prompt, num_images=s.num_images, out=s.out, model=s.model,
                         seed=s.seed, scale=s.scale, device=s.device, world=s.world)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(paths)} images to {s.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
