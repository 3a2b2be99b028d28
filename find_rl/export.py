"""The portable format of learned noise distributions (no Ray needed to read it).

A policy folder holds:

- ``noise_policy.safetensors``: tensors ``mean`` and ``std``, each ``(P, *latent_shape)`` float32; row i is the
  Gaussian N(mean_i, std_i^2) over the initial latent of prompt i.
- ``noise_policy.json``: ``{"format": "find_rl.noise_policy", "version": 1, "prompts": [...], "model": ...,
  "latent_shape": [...], "sampler": {num_inference_steps, guidance_scale, eta, device, dtype}, "training": {...}}``.

Use it with any diffusers pipeline: ``latents = mean[i] + std[i] * torch.randn(...)``, then
``pipe(prompt, latents=latents)``. :func:`load_policy` validates both files and raises a one-line error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

FORMAT = "find_rl.noise_policy"
VERSION = 1
TENSORS_FILE = "noise_policy.safetensors"
META_FILE = "noise_policy.json"


@dataclass
class NoisePolicy:
    prompts: list[str]
    mean: torch.Tensor  # (P, *latent_shape)
    std: torch.Tensor  # (P, *latent_shape)
    model: str = "shapes"
    sampler: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return tuple(self.mean.shape[1:])

    def index(self, prompt: str) -> int:
        if prompt not in self.prompts:
            raise ValueError(f"prompt {prompt!r} is not in this policy; it was trained for: {', '.join(map(repr, self.prompts))}")
        return self.prompts.index(prompt)

    def sample(self, prompt: str, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` initial latents ``(n, *latent_shape)`` drawn from this prompt's learned distribution."""
        i = self.index(prompt)
        eps = torch.randn((n, *self.latent_shape), generator=generator)
        return self.mean[i] + self.std[i] * eps


def save_policy(directory: str | Path, policy: NoisePolicy) -> Path:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    save_file({"mean": policy.mean.detach().float().contiguous().cpu(), "std": policy.std.detach().float().contiguous().cpu()},
              str(d / TENSORS_FILE))
    meta = {"format": FORMAT, "version": VERSION, "prompts": policy.prompts, "model": policy.model,
            "latent_shape": list(policy.latent_shape), "sampler": policy.sampler, "training": policy.training}
    (d / META_FILE).write_text(json.dumps(meta, indent=2))
    return d


def load_policy(directory: str | Path) -> NoisePolicy:
    d = Path(directory)
    meta_path, tensor_path = d / META_FILE, d / TENSORS_FILE
    if not meta_path.is_file() or not tensor_path.is_file():
        raise ValueError(f"{d} is not an exported find_rl policy: it needs {META_FILE} and {TENSORS_FILE} (written by find_rl.train)")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{meta_path} is corrupt ({e.__class__.__name__}); re-export the policy") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path} is not a find_rl noise policy (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("version") != VERSION:
        raise ValueError(f"{meta_path} has version {meta.get('version')}; this find_rl reads version {VERSION}")
    try:
        tensors = load_file(str(tensor_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{tensor_path} is corrupt or unreadable ({e.__class__.__name__}); re-export the policy") from None
    if set(tensors) != {"mean", "std"}:
        raise ValueError(f"{tensor_path} must hold exactly 'mean' and 'std', found {sorted(tensors)}")
    mean, std = tensors["mean"], tensors["std"]
    prompts = meta.get("prompts")
    expect = (len(prompts or []), *meta.get("latent_shape", []))
    if not prompts or tuple(mean.shape) != expect or tuple(std.shape) != expect:
        raise ValueError(f"{tensor_path}: mean {tuple(mean.shape)} / std {tuple(std.shape)} do not match {expect} from {META_FILE}")
    if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
        raise ValueError(f"{tensor_path} holds NaN/inf or non-positive std values; re-export the policy")
    return NoisePolicy(prompts=list(prompts), mean=mean, std=std, model=meta.get("model", "shapes"),
                       sampler=meta.get("sampler", {}), training=meta.get("training", {}))

