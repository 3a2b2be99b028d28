"""Exact object detection for the scenes world: components, colour by channel pattern, shape by box templates, defects.

For a batch ``(N, 3, H, W)`` in [-1, 1] (``v`` = a pixel's brightest channel):

1. Foreground = ``v > FG_THRESHOLD``; objects are its 4-connected components (one ``ndimage.label`` call for the
   whole batch). A component of fewer than ``MIN_PIXELS`` pixels is a speck: dropped, and a defect when one of its
   pixels is bright (``v > BRIGHT_THRESHOLD``).
2. Colour = the most common channel pattern (each channel on when > 0) over the object, which must cover at least
   ``MIN_PURITY`` of it, be a pattern of ``COLOUR_PATTERNS`` (white is none) and be bright on average
   (mean ``v >= MIN_BRIGHTNESS``); else the colour is ``None``.
3. Shape: the object's box must be square (``|h - w| <= ASPECT_TOLERANCE``) and its side within ``SIDE_RANGE``.
   Each shape's templates are its sprites (``geometry.sprite``, a square box) of about the box's side, at every
   position in the box and a one-pixel margin (``templates``); a shape's IoU is the best over its templates.
   Shape = the best shape when its IoU reaches ``min_iou`` and leads the runner-up by ``MIN_MARGIN[shape]``;
   else ``None``. A 2:1 bar fails the aspect check; a rounded square is closer to the square's sprites than to
   the circle's, or too close to both.
4. Smear: pixels clearly above the black background (``v > FAINT_THRESHOLD``) that are neither objects, nor within
   one pixel of an object, nor bright specks; ``SMEAR_PIXELS`` or more of them make a defect.

Thresholds from measured ground truth (README.md): a ground-truth object matches one of its templates exactly
(IoU 1) and leads the runner-up shape by >= 0.21 (circle), 0.19 (square), 0.33 (triangle), 0.26 (cross);
``MIN_MARGIN`` is about half of that, ``DEFAULT_IOU`` and ``STRICT_IOU`` leave room for a few wrong pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from find_rl.worlds.scenes.geometry import SHAPES, SIZES, sprite
from find_rl.worlds.scenes.grammar import COLOUR_PATTERNS

FG_THRESHOLD = 0.0
FAINT_THRESHOLD = -0.5
BRIGHT_THRESHOLD = 0.5
MIN_PIXELS = 6
MIN_PURITY = 0.8
MIN_BRIGHTNESS = 0.5
SMEAR_PIXELS = 4
ASPECT_TOLERANCE = 1
SIDE_RANGE = (min(SIZES) - 1, max(SIZES) + 1)
DEFAULT_IOU = 0.8
STRICT_IOU = 0.9
#: Minimum lead of the best shape's IoU over the runner-up, per detected shape (circle, square, triangle, cross).
MIN_MARGIN = (0.1, 0.1, 0.15, 0.12)

_IN_PLANE_4 = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE_4[1] = ndimage.generate_binary_structure(2, 1)
_IN_PLANE_8 = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE_8[1] = True
#: channel-pattern code (R + 2G + 4B) -> colour index, -1 for white (and the impossible all-off pattern)
_CODE_TO_COLOUR = np.full(8, -1)
for _c, (_r, _g, _b) in enumerate(COLOUR_PATTERNS):
    _CODE_TO_COLOUR[_r + 2 * _g + 4 * _b] = _c


@dataclass(frozen=True)
class DetectedObject:
    """One object (a foreground component of at least ``MIN_PIXELS`` pixels)."""

    colour: int | None  # index into COLOURS, None when impure, white or dim
    shape: int | None  # index into SHAPES, None when no template passes
    box: tuple[int, int, int, int]  # (x0, y0, x1, y1), pixel edges, x1 and y1 exclusive
    ious: tuple[float, ...]  # best template IoU per shape (0 when the box is not square or out of range)
    purity: float
    n_pixels: int

    @property
    def centre(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)

    @property
    def dims(self) -> tuple[int, int]:
        return (self.box[2] - self.box[0], self.box[3] - self.box[1])

    @property
    def size(self) -> int:
        return max(self.dims)


@dataclass(frozen=True)
class Detection:
    """What one image shows: its objects (in label order), bright specks and smear pixels."""

    objects: tuple[DetectedObject, ...]
    specks: int
    smear_pixels: int

    @property
    def clean(self) -> bool:
        return self.specks == 0 and self.smear_pixels < SMEAR_PIXELS


_TEMPLATES: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def templates(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Templates for an object whose box is ``h x w``: each shape's sprites of side ``max(h, w) - 1`` to
    ``max(h, w) + 1`` at every position inside the box and a one-pixel margin around it.

    Returns ``masks (n_templates, (h + 2) * (w + 2))`` float32 (the window is the box and its margin) and
    ``owner (n_templates,)``, the shape index of each.
    """
    if (h, w) not in _TEMPLATES:
        masks, owner = [], []
        for k in range(len(SHAPES)):
            for s in range(max(h, w) - 1, max(h, w) + 2):
                if not SIDE_RANGE[0] <= s <= min(SIDE_RANGE[1], h + 2, w + 2):
                    continue
                for oy in range(h + 3 - s):
                    for ox in range(w + 3 - s):
                        m = np.zeros((h + 2, w + 2), dtype=bool)
                        m[oy : oy + s, ox : ox + s] = sprite(k, s)
                        masks.append(m.ravel())
                        owner.append(k)
        _TEMPLATES[h, w] = (np.array(masks, dtype=np.float32), np.array(owner))
    return _TEMPLATES[h, w]


def _shape_ious(window: np.ndarray) -> tuple[float, ...]:
    """Best template IoU per shape for an object's window (its box with one pixel of margin)."""
    h, w = window.shape[0] - 2, window.shape[1] - 2
    if abs(h - w) > ASPECT_TOLERANCE or not SIDE_RANGE[0] <= max(h, w) <= SIDE_RANGE[1]:
        return (0.0,) * len(SHAPES)
    masks, owner = templates(h, w)
    v = window.reshape(-1).astype(np.float32)
    inter = masks @ v
    iou = inter / (masks.sum(axis=1) + v.sum() - inter)
    best = np.zeros(len(SHAPES))
    np.maximum.at(best, owner, iou)
    return tuple(best.tolist())


def classify(ious: tuple[float, ...], *, min_iou: float = DEFAULT_IOU) -> int | None:
    """The shape whose IoU reaches ``min_iou`` and leads the runner-up by its margin, else ``None``."""
    order = np.argsort(ious)[::-1]
    best, second = int(order[0]), ious[order[1]]
    return best if ious[best] >= min_iou and ious[best] - second >= MIN_MARGIN[best] else None


def detect_batch(images: np.ndarray, *, min_iou: float = DEFAULT_IOU) -> list[Detection]:
    """Detect the objects of each image of a ``(N, 3, H, W)`` batch in [-1, 1]."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
    v = images.max(axis=1)
    fg = v > FG_THRESHOLD
    labels, n_labels = ndimage.label(fg, structure=_IN_PLANE_4)
    flat = labels.ravel()
    n_pix = np.bincount(flat, minlength=n_labels + 1)
    code = ((images > 0) * np.array([1, 2, 4])[None, :, None, None]).sum(axis=1)
    code_counts = np.bincount(flat * 8 + code.ravel(), minlength=(n_labels + 1) * 8).reshape(-1, 8)
    brightness = np.bincount(flat, weights=v.ravel(), minlength=n_labels + 1) / np.maximum(n_pix, 1)
    peak = ndimage.maximum(v, labels, np.arange(n_labels + 1)) if n_labels else np.zeros(1)
    is_object = n_pix >= MIN_PIXELS
    is_speck = ~is_object & (peak > BRIGHT_THRESHOLD)
    is_object[0] = is_speck[0] = False
    near_object = ndimage.binary_dilation(is_object[labels], structure=_IN_PLANE_8)
    smear = (v > FAINT_THRESHOLD) & ~near_object & ~is_speck[labels]
    smear_pixels = smear.sum(axis=(1, 2))
    per_image: list[list[DetectedObject]] = [[] for _ in range(len(images))]
    specks = np.zeros(len(images), dtype=np.int64)
    for lab, sl in enumerate(ndimage.find_objects(labels), start=1):
        if is_speck[lab]:
            specks[sl[0].start] += 1
        if not is_object[lab]:
            continue
        b, ys, xs = sl
        window = np.zeros((ys.stop - ys.start + 2, xs.stop - xs.start + 2), dtype=bool)  # the box and a margin
        window[1:-1, 1:-1] = labels[b.start, ys, xs] == lab
        counts = code_counts[lab]
        best_code = int(counts.argmax())
        purity = float(counts[best_code] / n_pix[lab])
        colour = int(_CODE_TO_COLOUR[best_code])
        ok_colour = colour >= 0 and purity >= MIN_PURITY and brightness[lab] >= MIN_BRIGHTNESS
        ious = _shape_ious(window)
        per_image[b.start].append(DetectedObject(colour if ok_colour else None, classify(ious, min_iou=min_iou),
                                                 (xs.start, ys.start, xs.stop, ys.stop), ious, purity, int(n_pix[lab])))
    return [Detection(tuple(o), int(s), int(m)) for o, s, m in zip(per_image, specks, smear_pixels)]
