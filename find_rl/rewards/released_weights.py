"""Loading a released reward checkpoint into our modules: exact key checks, one-line errors, and its image transform.

The preference rewards (:mod:`find_rl.rewards.image_reward`, :mod:`find_rl.rewards.hps`) read the files their authors released, in
the released key layout, and rename the keys to transformers' module names. Every key is accounted for: a key the
reward needs and the file lacks, or a key the released layout does not have, stops the load with one line naming
the first of them. No Ray imports here.
"""

from __future__ import annotations

from pathlib import Path

import torch

#: The normalisation of OpenAI's CLIP, which ImageReward's and open_clip's (HPSv2's) image transforms both use.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def read_torch_file(path: Path, what: str) -> dict:
    """A released ``.pt`` file read with ``weights_only=True`` (tensors and plain containers only, no code)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt or truncated download: torch and pickle raise many types
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise ValueError(f"could not read the {what} checkpoint {path} ({e.__class__.__name__}: {first}); "
                         "download it again") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path} is not a {what} checkpoint (it holds a {type(obj).__name__}, not a state dict)")
    return obj


def check_keys(state: dict, expected: set[str], *, optional: set[str] = frozenset(), what: str, path: Path) -> None:
    """Raise one line naming the first missing and unexpected keys unless ``state`` has exactly ``expected``.

    ``optional`` keys belong to the released layout but are not used by the reward (e.g. BLIP's contrastive
    projections): they may be present or not.
    """
    present = set(state) - set(optional)
    missing, unexpected = sorted(expected - present, key=_natural), sorted(present - expected, key=_natural)
    if missing or unexpected:
        parts = [f"{label} {_first(keys)}" for label, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
        raise ValueError(f"{path} does not have the keys of a released {what} checkpoint: {'; '.join(parts)}")


def load_renamed(module: torch.nn.Module, renamed: dict[str, tuple[str, torch.Tensor]], *, what: str, path: Path) -> None:
    """Load ``{our name: (released name, tensor)}`` into ``module``; a shape that disagrees is named in one line.

    The key sets were checked by :func:`check_keys`, so a missing or extra name here is a bug in the key map and
    raises ``RuntimeError`` from ``load_state_dict(strict=True)``.
    """
    ours = module.state_dict()
    for name, (released, tensor) in renamed.items():
        if name in ours and tuple(tensor.shape) != tuple(ours[name].shape):
            raise ValueError(f"{path}: {released} has shape {tuple(tensor.shape)} but the {what} config gives "
                             f"{tuple(ours[name].shape)}; the checkpoint and its config do not belong together")
    module.load_state_dict({name: tensor for name, (_, tensor) in renamed.items()}, strict=True)


def resize_center_crop(images, size: int, *, mean=OPENAI_MEAN, std=OPENAI_STD, device="cpu") -> torch.Tensor:
    """ImageReward's transform, on tensors: ``(N, 3, H, W)`` in [-1, 1] -> ``(N, 3, size, size)``, normalised.

    torchvision's ``Resize(size, BICUBIC)`` (the shorter side to ``size``, antialiased) then ``CenterCrop(size)``
    then ``Normalize(mean, std)``, as ``_transform`` in ImageReward.py. ImageReward applies them to a PIL image
    (8-bit pixels, PIL's resampling); here they run on the float tensor. An image already ``size`` on its shorter
    side is not resampled.
    """
    x = _unit(images, device)
    h, w = x.shape[-2:]
    if min(h, w) != size:  # torchvision: the longer side becomes int(size * long / short)
        new = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
        x = torch.nn.functional.interpolate(x, size=new, mode="bicubic", antialias=True, align_corners=False)
    top, left = int(round((x.shape[-2] - size) / 2)), int(round((x.shape[-1] - size) / 2))
    return _normalise(x[..., top:top + size, left:left + size], mean, std)


def resize_longest_pad(images, size: int, *, mean=OPENAI_MEAN, std=OPENAI_STD, device="cpu") -> torch.Tensor:
    """HPSv2's transform: ``(N, 3, H, W)`` in [-1, 1] -> the longer side resized to ``size``, zero-padded to a square.

    open_clip's ``ResizeMaxSize(size, fill=0)`` (bicubic, antialiased, on the tensor after ``ToTensor``), which
    ``hpsv2/img_score.py`` gets by building with ``light_augmentation=True``, then ``Normalize(mean, std)``; the
    padding is black before normalisation. Square images are just resized.
    """
    x = _unit(images, device)
    h, w = x.shape[-2:]
    scale = size / max(h, w)
    if scale != 1.0:
        new = (round(h * scale), round(w * scale))
        x = torch.nn.functional.interpolate(x, size=new, mode="bicubic", antialias=True, align_corners=False)
        pad_h, pad_w = size - new[0], size - new[1]
        x = torch.nn.functional.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=0.0)
    return _normalise(x, mean, std)


def _unit(images, device) -> torch.Tensor:
    x = torch.as_tensor(images).to(device, torch.float32)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"this reward scores images of shape (N, 3, H, W), got {tuple(x.shape)}")
    return (x.clamp(-1, 1) + 1) / 2


def _normalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    return (x - x.new_tensor(mean)[:, None, None]) / x.new_tensor(std)[:, None, None]


def layer_count(state: dict, prefix: str) -> int:
    """How many numbered blocks ``{prefix}{i}.`` the state dict has (0 if none)."""
    heads = [k[len(prefix):].split(".", 1)[0] for k in state if k.startswith(prefix)]
    found = {int(h) for h in heads if h.isdigit()}
    return max(found) + 1 if found else 0


def _natural(key: str) -> list:
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in key.split(".")]


def _first(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")
