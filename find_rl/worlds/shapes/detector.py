"""An exact, pixel-based attribute detector for the shapes world: the default reward and the ground truth.

Procedure for one image (``(3, H, W)`` in [-1, 1]):
1. Foreground = pixels whose brightest channel is > 0. Fewer than ``min_pixels`` -> no shape.
2. Colour = the most common brightest channel over the foreground; it must cover >= ``min_purity`` of it
   (a two-colour blob fails here).
3. The foreground must be one 4-connected blob (a second blob or a stray speck fails).
4. The image must be clean around it: the **stray mass** -- the brightness above a faint floor (``STRAY_FLOOR``,
   15% of full brightness) summed over the pixels more than one pixel away from the blob, in units of one
   full-brightness pixel -- must be <= ``MAX_STRAY`` (0.5). A faint second object or smear below the foreground
   threshold fails here; the world's own images have none, and 99% of the frozen model's have <= 0.3.
5. The blob's bounding box must be square: every shape of the world fills a square box (height = width), so the
   aspect ratio max(h / w, w / h) must be <= ``MAX_ASPECT`` (1.25; the world's rasterised shapes reach 1.17). A 2:1
   bar is not a square, a spire twice as tall as wide is not a triangle.
6. Fit three templates inside the foreground's bounding box (inscribed ellipse, the box itself, an upward
   triangle; with step 5 they keep the shapes' proportions to within 25%) and take the intersection-over-union of
   each with the foreground.
7. Shape = the template with the best IoU, which must reach ``min_iou`` (0.7 by default, 0.8 for the strict
   setting used in evaluation) and beat the runner-up template by ``MIN_MARGIN[shape]`` (circle 0, square 0.1,
   triangle 0.2: below the 0.1% quantile of real data for each shape). The margin rejects near-shapes that sit
   between two templates, such as a rounded square; the strict IoU rejects tiered "pagoda" triangles.
8. A circle leaves the corners of its box empty: in each quarter of the box, the part outside the inscribed
   ellipse may be at most ``MAX_CORNER_FILL`` (75%) foreground (the world's circles: at most 67%). A "D" with a
   flat side and two square corners, which beats the box template on IoU, fails here.
9. A shape is drawn whole, inside the frame: the blob may have at most ``MAX_BORDER_PIXELS`` (2) pixels on the
   image's outermost rows and columns. The world's own images never reach the border; the frozen model's aligned
   images that do graze it with 1-2 pixels (10 of ~1,760 aligned in 4,608 draws). A blob pressed against the border
   (a quarter disc in a corner, a shield flattened against the top edge) has a run of pixels there and fails, whatever
   its template IoU inside its own, cut, box.

The previous detector fitted the templates inside the blob's own bounding box, so any rectangle matched the box
template and FIND's default run learned to draw "a blue square" as a 2:1 bar with a faint red smear below it
and "a green circle" as a "D" with two square corners (``bench/RESULTS.md``, "The mended detector"); steps 4, 5
and 8 close that. A mixture policy then drew "a green circle" as a blob cut by the image corner, which fitted the
circle template inside its own (square) box (``bench/RESULTS.md``, "Shapes cut by the image border"); step 9
closes that.

Outputs per image: ``aligned`` (shape and colour both match the prompt), the detected attributes, and a graded
``score`` in [0, 1] used as the shaped reward::

    margin = IoU(asked shape) - max IoU(other shapes)   (-1 when the colour is wrong)
    clean  = exp(-stray mass) * min(1, MAX_ASPECT / aspect) where aspect = max(h/w, w/h)
    score  = 1                                           if aligned
             clean * (1 + margin) / 4   (in [0, 0.5))    otherwise

Below the bar the score rises as the image gets closer to the asked shape and cleaner, which gives a learning
signal even to prompts the frozen model almost never gets right. Above it every aligned image scores the same: the
reward does not prefer one "perfect" aligned image over the others, which would collapse the learned distribution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from find_rl.worlds.shapes.world import Attributes, parse_prompt

DEFAULT_IOU = 0.7
STRICT_IOU = 0.8
#: Minimum lead of the best template's IoU over the runner-up, per detected shape (circle, square, triangle):
#: at or below the 0.1% quantile of the world's own images (``bench/detector_calibration.py``).
MIN_MARGIN = (0.0, 0.1, 0.2)
#: Largest accepted ratio of the blob's box sides (either way round).
MAX_ASPECT = 1.25
#: Brightness (in [0, 1]) below which a pixel off the blob counts as background.
STRAY_FLOOR = 0.15
#: Largest foreground share of any corner region (box quarter outside the inscribed ellipse) of a circle.
MAX_CORNER_FILL = 0.75
#: Largest accepted stray mass (full-brightness pixels' worth of light more than one pixel off the blob).
MAX_STRAY = 0.5
#: Most foreground pixels a shape may have on the image's outermost rows and columns (step 9).
MAX_BORDER_PIXELS = 2


@dataclass(frozen=True)
class Detection:
    shape: int | None  # detected shape index (None: no shape passed the checks)
    colour: int | None
    ious: tuple[float, float, float]  # IoU with the circle, square and triangle templates
    purity: float
    n_pixels: int
    aspect: float = 1.0  # max(h / w, w / h) of the blob's bounding box
    stray: float = 0.0  # stray mass off the blob (step 4)
    corner_fill: float = 0.0  # the fullest corner region of the box (step 8)
    border_pixels: int = 0  # foreground pixels on the image's outermost rows and columns (step 9)

    @property
    def clean(self) -> float:
        """In (0, 1]: 1 for a square box and a clean background, lower for an elongated blob or a smear."""
        return math.exp(-self.stray) * min(1.0, MAX_ASPECT / self.aspect)


def _templates(h: int, w: int) -> np.ndarray:
    """Boolean ``(4, h, w)`` masks of an ellipse, a box and an upward triangle filling an ``h x w`` box, and the
    box's four corner regions as labels 1-4 (0 inside the ellipse) in the last one."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    yc, xc = y + 0.5, x + 0.5  # pixel centres in box coordinates [0, h] x [0, w]
    ellipse = ((xc - w / 2) / (w / 2)) ** 2 + ((yc - h / 2) / (h / 2)) ** 2 <= 1.0
    box = np.ones((h, w), dtype=bool)
    triangle = np.abs(xc - w / 2) <= (w / 2) * (yc / h) + 0.25
    corners = np.where(ellipse, 0, 1 + (yc >= h / 2) * 2 + (xc >= w / 2))
    return np.stack([ellipse, box, triangle, corners])


_TEMPLATE_CACHE: dict[tuple[int, int], np.ndarray] = {}


def _fit(crop: np.ndarray) -> tuple[tuple[float, float, float], float]:
    """IoU of a blob's bounding-box crop with each template, and the largest corner fill (step 8)."""
    tmpl = _TEMPLATE_CACHE.get(crop.shape)
    if tmpl is None:
        tmpl = _TEMPLATE_CACHE.setdefault(crop.shape, _templates(*crop.shape))
    shapes, corners, n = tmpl[:3].astype(bool), tmpl[3], int(crop.sum())
    inter = (shapes & crop).sum(axis=(1, 2))
    ious = tuple((inter / (shapes.sum(axis=(1, 2)) + n - inter)).tolist())
    area = np.bincount(corners.ravel(), minlength=5)[1:]
    filled = np.bincount(corners[crop], minlength=5)[1:]
    return ious, float(np.max(filled / np.maximum(area, 1)))


def detect_batch(
    images: np.ndarray, *, min_iou: float = DEFAULT_IOU, min_purity: float = 0.8, min_pixels: int = 6
) -> list[Detection]:
    """Detect the shape and colour of each image of a ``(N, 3, H, W)`` batch in [-1, 1].

    The per-pixel work is vectorised over the batch; only the template fit runs per image.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
    bright = images.max(axis=1)  # (N, H, W)
    fg = bright > 0.0
    n_pix = fg.sum(axis=(1, 2))
    winner = images.argmax(axis=1)
    counts = np.stack([((winner == c) & fg).sum(axis=(1, 2)) for c in range(3)], axis=1)  # (N, 3)
    near = ndimage.binary_dilation(fg, structure=ndimage.generate_binary_structure(3, 1) * [[[0]], [[1]], [[0]]])
    stray = np.where(near, 0.0, np.clip((bright + 1.0) / 2.0 - STRAY_FLOOR, 0.0, None)).sum(axis=(1, 2))
    rows, cols = fg.any(axis=2), fg.any(axis=1)
    inner = np.zeros(fg.shape[1:], dtype=bool)
    inner[1:-1, 1:-1] = True
    border = (fg & ~inner).sum(axis=(1, 2))
    out = []
    for i in range(len(images)):
        n = int(n_pix[i])
        if n < min_pixels:
            out.append(Detection(None, None, (0.0, 0.0, 0.0), 0.0, n, stray=float(stray[i])))
            continue
        colour = int(counts[i].argmax())
        purity = float(counts[i, colour] / n)
        ry, rx = np.flatnonzero(rows[i]), np.flatnonzero(cols[i])
        crop = fg[i, ry[0] : ry[-1] + 1, rx[0] : rx[-1] + 1]
        h, w = crop.shape
        aspect = max(h / w, w / h)
        ious, corner_fill = _fit(crop)
        shape = int(np.argmax(ious))
        margin = ious[shape] - max(v for k, v in enumerate(ious) if k != shape)
        ok_shape = (ious[shape] >= min_iou and margin >= MIN_MARGIN[shape] and aspect <= MAX_ASPECT
                    and stray[i] <= MAX_STRAY and (shape != 0 or corner_fill <= MAX_CORNER_FILL)
                    and border[i] <= MAX_BORDER_PIXELS and ndimage.label(fg[i])[1] == 1)
        out.append(Detection(shape if ok_shape else None, colour if purity >= min_purity else None, ious, purity, n,
                             aspect, float(stray[i]), corner_fill, int(border[i])))
    return out


def detect(image: np.ndarray, **kwargs) -> Detection:
    """Detect the shape and colour of one ``(3, H, W)`` image in [-1, 1] (see :func:`detect_batch`)."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an image of shape (3, H, W), got {tuple(image.shape)}")
    return detect_batch(image[None], **kwargs)[0]


def score_images(images: np.ndarray, prompts: list[str], *, min_iou: float = DEFAULT_IOU) -> dict[str, np.ndarray]:
    """Score a batch ``(N, 3, H, W)`` against ``N`` prompts.

    Returns float32 ``score`` (graded, in [0, 1]) and ``shape_iou`` (the IoU of the detected shape's template, 0 when
    none passed), and bool ``aligned``, ``shape_ok`` and ``colour_ok`` arrays. Since the stricter setting differs only
    in its IoU threshold, ``aligned & (shape_iou >= STRICT_IOU)`` is the strict verdict of the same images.
    A prompt that leaves an attribute open ("a red shape") counts that attribute as matched.
    """
    images = np.asarray(images)
    if images.ndim != 4 or len(images) != len(prompts):
        raise ValueError(f"expected images (N, 3, H, W) and N prompts, got {tuple(images.shape)} and {len(prompts)} prompts")
    targets: dict[str, Attributes] = {p: parse_prompt(p) for p in set(prompts)}
    n = len(prompts)
    score = np.empty(n, np.float32)
    shape_iou = np.zeros(n, np.float32)
    aligned, shape_ok, colour_ok = (np.empty(n, bool) for _ in range(3))
    for i, (d, prompt) in enumerate(zip(detect_batch(images, min_iou=min_iou), prompts)):
        t = targets[prompt]
        colour_ok[i] = d.colour is not None and (t.colour is None or d.colour == t.colour)
        shape_ok[i] = d.shape is not None and (t.shape is None or d.shape == t.shape)
        aligned[i] = colour_ok[i] and shape_ok[i]
        if d.shape is not None:
            shape_iou[i] = d.ious[d.shape]
        if not colour_ok[i]:
            margin = -1.0
        elif t.shape is None:
            margin = 1.0 if shape_ok[i] else -1.0
        else:
            others = [v for k, v in enumerate(d.ious) if k != t.shape]
            margin = d.ious[t.shape] - max(others)
        score[i] = 1.0 if aligned[i] else d.clean * (1.0 + margin) / 4.0
    return {"score": score, "shape_iou": shape_iou, "aligned": aligned, "shape_ok": shape_ok, "colour_ok": colour_ok}
