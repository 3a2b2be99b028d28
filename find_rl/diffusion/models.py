"""Loading frozen diffusion pipelines by name, folder or hub id, through diffusers' ``from_pretrained``."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from find_rl.worlds import WORLD_NAMES, get_world, pipeline_class, world_of_model

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_model(model: str) -> str:
    """A world's name ("shapes", "scenes": its shipped model) -> its folder; anything else is returned as given (a
    folder or a hub id)."""
    return str(get_world(model).model_dir) if model in WORLD_NAMES else model


def torch_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; use one of {', '.join(DTYPES)}")
    return DTYPES[name]


def load_pipeline(model: str = "shapes", *, device: str = "cpu", dtype: str = "float32"):
    """Load a frozen diffusers pipeline; the pipeline class comes from the checkpoint's ``model_index.json``.

    ``model`` is a world's name (``"shapes"``, ``"scenes"``: the embedded models), a local pipeline folder, or a
    Hugging Face hub id.
    Raises a one-line ``ValueError`` that says what to fix when the model is missing, foreign or corrupt.
    """
    from diffusers import DiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

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
        world = world_of_model(path)  # a world's own pipeline class (diffusers does not know it)
        cls = pipeline_class(world, class_name) if world is not None else DiffusionPipeline
    elif "/" in path and not path.startswith((".", "/")) and path.count("/") == 1:
        cls = DiffusionPipeline  # hub id such as "runwayml/stable-diffusion-v1-5"
    else:
        raise ValueError(f"model {model!r} not found: pass {' or '.join(repr(w) for w in WORLD_NAMES)}, an existing pipeline "
                         "folder, or a hub id like 'org/name'")
    diffusers_logging.disable_progress_bar()  # loading bars would clutter the commands' output
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
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
