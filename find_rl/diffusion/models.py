"""Loading frozen diffusion pipelines by name, folder or hub id, through diffusers' ``from_pretrained``."""

from __future__ import annotations

import json
from pathlib import Path

import torch

#: The embedded default model, shipped inside the package.
SHAPES_MODEL_DIR = Path(__file__).resolve().parents[1] / "worlds" / "shapes" / "model"
ALIASES = {"shapes": SHAPES_MODEL_DIR}

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_model(model: str) -> str:
    """An alias ("shapes") -> its folder; anything else is returned as given (a folder or a hub id)."""
    return str(ALIASES.get(model, model))


def torch_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; use one of {', '.join(DTYPES)}")
    return DTYPES[name]


def load_pipeline(model: str = "shapes", *, device: str = "cpu", dtype: str = "float32"):
    """Load a frozen diffusers pipeline; the pipeline class comes from the checkpoint's ``model_index.json``.

    ``model`` is ``"shapes"`` (the embedded default), a local pipeline folder, or a Hugging Face hub id.
    Raises a one-line ``ValueError`` that says what to fix when the model is missing, foreign or corrupt.
    """
    from diffusers import DiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    from find_rl.worlds.shapes.pipeline import ShapesPipeline

    path = resolve_model(model)
    local = Path(path)
    kwargs = {"dtype": torch_dtype(dtype), "low_cpu_mem_usage": False}
    if local.exists():
        index = local / "model_index.json"
        if not index.is_file():
            raise ValueError(f"{local} is not a diffusers pipeline folder (no model_index.json); pass a folder saved with save_pretrained")
        try:
            class_name = json.loads(index.read_text())["_class_name"]
        except (json.JSONDecodeError, KeyError) as e:
            raise ValueError(f"{index} is corrupt ({e.__class__.__name__}); re-download or re-save the pipeline") from None
        cls = ShapesPipeline if class_name == "ShapesPipeline" else DiffusionPipeline
    elif "/" in path and not path.startswith((".", "/")) and path.count("/") == 1:
        cls = DiffusionPipeline  # hub id such as "runwayml/stable-diffusion-v1-5"
    else:
        raise ValueError(f"model {model!r} not found: pass 'shapes', an existing pipeline folder, or a hub id like 'org/name'")
    diffusers_logging.disable_progress_bar()  # loading bars would clutter the commands' output
    try:
        pipe = cls.from_pretrained(path, **kwargs)
    except Exception as e:  # diffusers/safetensors raise many types for unreadable weights
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ValueError(f"could not load model {model!r} ({e.__class__.__name__}: {first[:200]}); check the path or re-download it") from None
    pipe.set_progress_bar_config(disable=True)
    for name in ("unet", "transformer", "vae", "text_encoder", "text_encoder_2"):
        part = getattr(pipe, name, None)
        if isinstance(part, torch.nn.Module):
            part.requires_grad_(False).eval()
    return pipe.to(device)
