"""Images of the frozen models as PIL images (grids, generate, a pipeline's ``output_type="pil"``)."""

from __future__ import annotations

import numpy as np
from PIL import Image


def to_pil(images: np.ndarray, scale: int = 1) -> list[Image.Image]:
    """``(N, 3, H, W)`` in [-1, 1] -> PIL images, optionally upscaled by ``scale`` (nearest neighbour)."""
    arr = ((np.asarray(images).transpose(0, 2, 3, 1) + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)
    pils = [Image.fromarray(a) for a in arr]
    if scale > 1:
        pils = [p.resize((p.width * scale, p.height * scale), Image.NEAREST) for p in pils]
    return pils
