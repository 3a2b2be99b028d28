"""The exact scorer of the scenes world: GenEval's rules on exact geometry, a shaped reward and diversity factors.

An image is ``aligned`` with its prompt when all of these clauses hold for some one-to-one match between the
prompt's objects (``Prompt.instances``) and the detected objects (``detect.detect_batch``):

- shape: each matched object has the asked shape (``detect.classify``: square box, template IoU and margin);
- colour: each matched object has a valid colour, the asked one when the prompt names it (colour bound to shape);
- count: exactly as many recognised objects (any shape) as the prompt names (N present and not N + 1; nothing
  extra in any category, which is stricter than GenEval: the ground truth never has extras);
- position: for a position prompt, GenEval's rule on the two matched boxes (``geometry.relation_scores`` > 0.5);
- clean: no bright speck, no faint smear (``Detection.clean``) and no unrecognised object (a blob, merged objects).

``strict`` also asks every object's template IoU to reach ``detect.STRICT_IOU``. The shaped ``reward`` is the best
mean clause credit over all partial matches, where a clause earns 1 when it holds, and an unmet shape clause earns
``0.5 * IoU`` of the asked shape's templates (a signal for near misses). It is exactly 1 for an aligned image and
strictly below 1 otherwise (an unmet clause earns at most 0.5), and rises with every further clause that holds.

``factors`` keeps each prompt object's matched (x centre, y centre, box side) for diversity (NaN when unmatched).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from find_rl.worlds.scenes.detect import DEFAULT_IOU, STRICT_IOU, Detection, DetectedObject, detect_batch
from find_rl.worlds.scenes.geometry import relation_scores
from find_rl.worlds.scenes.grammar import CATEGORIES, MAX_OBJECTS, RELATIONS, Prompt, parse_prompt

#: Credit of an unmet shape clause per unit of the asked shape's template IoU.
NEAR_MISS_CREDIT = 0.5


@dataclass(frozen=True)
class SceneScores:
    """Scores of a batch of ``n`` images."""

    aligned: np.ndarray  # (n,) bool
    strict: np.ndarray  # (n,) bool: aligned and every object's IoU >= STRICT_IOU
    reward: np.ndarray  # (n,) float32 in [0, 1]; 1 exactly when aligned
    factors: np.ndarray  # (n, MAX_OBJECTS, 3) float32: matched (cx, cy, side) per prompt object, NaN if none
    detections: list[Detection]


def relation_holds(a: DetectedObject, b: DetectedObject, relation: str) -> bool:
    """GenEval's rule: ``a`` stands ``relation`` (one of ``RELATIONS``) of ``b``."""
    return bool(relation_scores(np.array(a.centre), np.array(a.dims), np.array(b.centre), np.array(b.dims))[
        RELATIONS.index(relation)] > 0.5)


def _credits(p: Prompt, objects: tuple[DetectedObject, ...]) -> np.ndarray:
    """``(n_instances, n_objects)``: shape credit + colour credit of matching each prompt object to each detection."""
    out = np.zeros((len(p.instances), len(objects)))
    for i, want in enumerate(p.instances):
        for d, o in enumerate(objects):
            shape = 1.0 if o.shape == want.shape else NEAR_MISS_CREDIT * o.ious[want.shape]
            colour = float(o.colour is not None and (want.colour is None or o.colour == want.colour))
            out[i, d] = shape + colour
    return out


def _best_match(p: Prompt, det: Detection) -> tuple[float, list[int | None]]:
    """The best total credit of the shape, colour and position clauses, and the matched detection per instance."""
    objects, n = det.objects, len(p.instances)
    credit = _credits(p, objects)
    if p.relation in RELATIONS and objects:  # two objects: every ordered pair, or one or none of them matched
        centre, dims = np.array([o.centre for o in objects]), np.array([o.dims for o in objects])
        scores = relation_scores(centre[:, None], dims[:, None], centre[None], dims[None])  # (a, b, 4): a of b
        pair = credit[0][:, None] + credit[1][None, :] + (scores[..., RELATIONS.index(p.relation)] > 0.5)
        np.fill_diagonal(pair, -np.inf)
        options = [(pair.max(), list(np.unravel_index(pair.argmax(), pair.shape))),
                   (credit[0].max(), [credit[0].argmax(), None]), (credit[1].max(), [None, credit[1].argmax()]),
                   (0.0, [None, None])]
        best, match = max(options, key=lambda t: t[0])
        return float(best), [None if m is None else int(m) for m in match]
    if not objects:
        return 0.0, [None] * n
    rows, cols = linear_sum_assignment(credit, maximize=True)
    match: list[int | None] = [None] * n
    for r, c in zip(rows, cols):
        match[r] = int(c)
    return float(credit[rows, cols].sum()), match


def score_detections(detections: list[Detection], prompts: list[str | Prompt]) -> SceneScores:
    """Score already detected images against their prompts (see the module docstring)."""
    if len(detections) != len(prompts):
        raise ValueError(f"expected one prompt per image, got {len(prompts)} prompts for {len(detections)} images")
    n = len(prompts)
    aligned, strict = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    reward = np.zeros(n, dtype=np.float32)
    factors = np.full((n, MAX_OBJECTS, 3), np.nan, dtype=np.float32)
    for k, (det, prompt) in enumerate(zip(detections, prompts)):
        p = parse_prompt(prompt) if isinstance(prompt, str) else prompt
        n_inst = len(p.instances)
        n_clauses = 2 * n_inst + 2 + (p.relation in RELATIONS)
        matched, match = _best_match(p, det)
        recognised = sum(o.shape is not None for o in det.objects)
        clean = det.clean and recognised == len(det.objects)
        total = matched + (recognised == n_inst) + clean
        aligned[k] = total >= n_clauses - 1e-9
        reward[k] = 1.0 if aligned[k] else total / n_clauses  # an unmet clause earns <= 0.5: total < n_clauses
        strict[k] = aligned[k] and all(max(o.ious) >= STRICT_IOU for o in det.objects)
        for i, d in enumerate(match):
            if d is not None:
                o = det.objects[d]
                factors[k, i] = (*o.centre, o.size)
        _sort_identical(p, factors[k])
    return SceneScores(aligned, strict, reward, factors, detections)


def _sort_identical(p: Prompt, rows: np.ndarray) -> None:
    """Order the factor rows of identical prompt objects ("three red circles") by x, then y, in place."""
    start = 0
    for o in p.objects:
        block = rows[start : start + o.count]
        rows[start : start + o.count] = block[np.lexsort((block[:, 1], block[:, 0]))]
        start += o.count


def score(images: np.ndarray, prompts: list[str | Prompt], *, min_iou: float = DEFAULT_IOU) -> SceneScores:
    """Detect and score a batch ``(N, 3, 32, 32)`` in [-1, 1] against ``N`` prompts."""
    images = np.asarray(images)
    if images.ndim != 4 or len(images) != len(prompts):
        raise ValueError(f"expected images (N, 3, H, W) and N prompts, got {tuple(images.shape)} and {len(prompts)} prompts")
    return score_detections(detect_batch(images, min_iou=min_iou), prompts)


def accuracy_by_category(prompts: list[str | Prompt], aligned: np.ndarray) -> dict[str, float]:
    """Mean of ``aligned`` per GenEval category present, and ``overall`` = the mean of those (GenEval's overall)."""
    cats = np.array([(parse_prompt(p) if isinstance(p, str) else p).category for p in prompts])
    aligned = np.asarray(aligned, dtype=np.float64)
    out = {c: float(aligned[cats == c].mean()) for c in CATEGORIES if (cats == c).any()}
    out["overall"] = float(np.mean(list(out.values()))) if out else float("nan")
    return out
