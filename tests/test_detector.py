"""The shapes detector on hand-drawn images: each attribute right and wrong, near-shapes, real data, and the
adversarial renders a policy found or could find (a 2:1 bar for a square, a "D" for a circle, a faint smear or a
faint second object beside a right shape, a spire for a triangle)."""

import numpy as np
import pytest

from find_rl.worlds.shapes.detector import MAX_BORDER_PIXELS, MAX_STRAY, STRICT_IOU, detect, score_images
from find_rl.worlds.shapes.world import all_prompts, make_dataset, render, shape_mask


def _img(mask: np.ndarray, colour: int) -> np.ndarray:
    img = -np.ones((3, 16, 16), np.float32)
    img[colour][mask] = 1.0
    return img


@pytest.mark.parametrize("shape", [0, 1, 2])
@pytest.mark.parametrize("colour", [0, 1, 2])
def test_each_clean_shape_and_colour_is_detected(shape, colour):
    d = detect(render(shape, colour, 7.5, 7.5, 5.5))
    assert (d.shape, d.colour) == (shape, colour)


def test_scores_right_and_wrong_attributes():
    green_circle = render(0, 1, 7.5, 7.5, 5.5)
    out = score_images(np.stack([green_circle] * 4), ["a green circle", "a red circle", "a green square", "a blue triangle"])
    assert out["aligned"].tolist() == [True, False, False, False]
    assert out["colour_ok"].tolist() == [True, False, True, False]
    assert out["shape_ok"].tolist() == [True, True, False, False]
    s = out["score"]
    assert 0.5 <= s[0] <= 1.0 and s[1] < 0.5 and s[2] < 0.5 and s[3] < 0.5
    assert s[2] > s[3]  # right colour, wrong shape scores above wrong both: a graded signal


def test_open_attribute_prompt_and_empty_image():
    out = score_images(np.stack([render(2, 0, 7.5, 7.5, 5.0), -np.ones((3, 16, 16), np.float32)]), ["a red shape", "a red shape"])
    assert out["aligned"].tolist() == [True, False]


def test_pagoda_triangle_fails():
    y, x = np.mgrid[0:16, 0:16]
    # a tiered "pagoda": three stacked bars with eaves instead of a straight-sided triangle (the reward hack
    # FIND found against the lenient detector in the prototype)
    mask = ((y >= 1) & (y < 5) & (abs(x - 7.5) <= 2)) | ((y >= 5) & (y < 9) & (abs(x - 7.5) <= 5)) | (
        (y >= 9) & (y < 14) & (abs(x - 7.5) <= 7))
    d = detect(_img(mask, 1))
    assert 0.7 < d.ious[2] < STRICT_IOU  # enough triangle IoU for a plain 0.7 threshold ...
    assert d.shape is None  # ... but not enough lead over the square template
    assert detect(_img(mask, 1), min_iou=STRICT_IOU).shape is None
    assert not score_images(_img(mask, 1)[None], ["a green triangle"])["aligned"][0]


def test_two_tier_pagoda_fails_even_lenient():
    y, x = np.mgrid[0:16, 0:16]
    mask = ((y >= 2) & (y < 7) & (abs(x - 7.5) <= 3)) | ((y >= 8) & (y < 13) & (abs(x - 7.5) <= 6))
    assert detect(_img(mask, 1)).shape is None


@pytest.mark.parametrize("p", [2.2, 2.6])
def test_rounded_square_is_not_a_square(p):
    y, x = np.mgrid[0:16, 0:16].astype(float)
    # a superellipse |x|^p + |y|^p <= r^p: a square with rounded corners, between the two templates
    mask = (abs(x - 7.5) / 6.5) ** p + (abs(y - 7.5) / 6.5) ** p <= 1.0
    for iou in (0.7, STRICT_IOU):
        d = detect(_img(mask, 0), min_iou=iou)
        assert d.shape is None
    assert not score_images(_img(mask, 0)[None], ["a red square"])["aligned"][0]


def test_two_colour_blob_fails_colour_purity():
    mask = shape_mask(1, 7.5, 7.5, 5.5)
    img = _img(mask, 0)
    img[0, :, 8:] = -1.0
    img[1][mask & (np.arange(16)[None, :] >= 8)] = 1.0  # right half green
    d = detect(img)
    assert d.colour is None
    assert not score_images(img[None], ["a red square"])["aligned"][0]


def test_two_separate_shapes_fail():
    img = np.maximum(render(0, 0, 4.0, 4.0, 4.0), render(0, 0, 11.5, 11.5, 4.0))
    assert detect(img).shape is None


def test_pure_noise_never_passes():
    rng = np.random.default_rng(0)
    noise = rng.uniform(-1, 1, size=(200, 3, 16, 16)).astype(np.float32)
    assert not score_images(noise, ["a red circle"] * 200)["aligned"].any()


@pytest.mark.parametrize("min_iou", [0.7, STRICT_IOU])
def test_real_dataset_images_pass_at_least_99_percent(min_iou):
    images, combos = make_dataset(2700, balanced=True, seed=3)
    prompts = [all_prompts()[k] for k in combos]
    rate = score_images(images, prompts, min_iou=min_iou)["aligned"].mean()
    assert rate >= 0.99


def test_bad_batch_shapes_raise():
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        score_images(np.zeros((2, 16, 16)), ["a red circle"] * 2)
    with pytest.raises(ValueError, match="unknown word"):
        score_images(np.zeros((1, 3, 16, 16)), ["a purple circle"])


def test_strict_verdict_derived_from_shape_iou_matches_a_strict_pass():
    """Frozen-model images of prompts where the two settings disagree (base blue circle: 0.78 vs 0.69)."""
    import torch

    from find_rl.diffusion.sampler import DiffusionSampler
    from find_rl.worlds.shapes.detector import DEFAULT_IOU

    prompts = ["a blue circle"] * 96 + ["a blue triangle"] * 96
    noise = torch.randn(len(prompts), 3, 16, 16, generator=torch.Generator().manual_seed(0))
    images = DiffusionSampler.from_pretrained("shapes").sample(noise, prompts).images
    lenient = score_images(images, prompts, min_iou=DEFAULT_IOU)
    strict = score_images(images, prompts, min_iou=STRICT_IOU)["aligned"]
    assert np.array_equal(lenient["aligned"] & (lenient["shape_iou"] >= STRICT_IOU), strict)
    assert lenient["aligned"].sum() > strict.sum() > 0


def _rect(h: int, w: int, y0: int = 2, x0: int = 2) -> np.ndarray:
    mask = np.zeros((16, 16), bool)
    mask[y0 : y0 + h, x0 : x0 + w] = True
    return mask


@pytest.mark.parametrize("hw", [(6, 12), (7, 13), (5, 10), (8, 11), (12, 6)])
def test_a_bar_is_not_a_square(hw):
    """The default run's exploit: a wide bar (about 2:1) matched the box template fitted inside its own box."""
    img = _img(_rect(*hw), 2)
    d = detect(img)
    assert d.shape is None and d.aspect > 1.25
    out = score_images(img[None], ["a blue square"])
    assert not out["aligned"][0] and out["score"][0] < 0.5


@pytest.mark.parametrize("hw", [(9, 9), (9, 10), (10, 11), (11, 12)])
def test_near_square_boxes_still_pass(hw):
    assert score_images(_img(_rect(*hw), 1)[None], ["a green square"])["aligned"][0]


#: The foreground of one of the default run's "a green circle" images (seed 0, before the detector was mended):
#: round on the right, with a flat left side and square corners.
_D_SHAPE = """
.....##...
...#######
...########
...########
...########
..#########
..#########
..########.
..#######..
"""


def test_a_d_shape_is_not_a_circle():
    mask = np.zeros((16, 16), bool)
    for i, row in enumerate(_D_SHAPE.strip().splitlines()):
        mask[2 + i, : len(row)] = [c == "#" for c in row]
    d = detect(_img(mask, 1))
    assert d.ious[0] > d.ious[1] + 0.05  # it beats the box template on IoU: only the empty-corner rule catches it
    assert d.shape is None
    assert not score_images(_img(mask, 1)[None], ["a green circle"])["aligned"][0]


@pytest.mark.parametrize("level", [-0.5, -0.3, 0.0])
def test_a_faint_smear_beside_a_right_shape_fails(level):
    """Below the foreground threshold (the brightest channel <= 0) a smear is invisible to steps 1-3."""
    img = render(1, 2, 7.5, 5.0, 4.5)
    img[0, 11:15, 5:11] = level  # a faint red smear under a blue square, as the default run drew
    d = detect(img)
    assert d.stray > MAX_STRAY and d.shape is None
    clean = score_images(render(1, 2, 7.5, 5.0, 4.5)[None], ["a blue square"])
    assert clean["aligned"][0] and not score_images(img[None], ["a blue square"])["aligned"][0]


def test_a_faint_second_object_fails_and_lowers_the_score():
    img = render(0, 1, 5.0, 5.0, 4.0)
    faint = render(1, 0, 12.0, 12.0, 2.5)
    img = np.maximum(img, np.where(faint > 0, -0.2, -1.0))  # a dim red square in the far corner
    out = score_images(np.stack([img, render(0, 1, 5.0, 5.0, 4.0)]), ["a green circle"] * 2)
    assert out["aligned"].tolist() == [False, True]


def test_background_noise_within_the_models_range_is_tolerated():
    """The frozen model leaves a faint haze off its shapes (stray mass <= 0.3 on 99% of its images)."""
    img = render(2, 2, 7.5, 7.5, 5.0)
    rng = np.random.default_rng(0)
    img = np.where(img < 0, np.clip(-0.85 + 0.05 * rng.standard_normal(img.shape), -1, -0.7), img).astype(np.float32)
    assert score_images(img[None], ["a blue triangle"])["aligned"][0]


def test_a_spire_is_not_a_triangle():
    """A tall, narrow triangle (the default run's "green triangle", about 1.3:1)."""
    y, x = np.mgrid[0:16, 0:16].astype(float)
    mask = (y >= 1) & (y <= 14) & (abs(x - 7.5) <= (y - 1) / 2.6 / 2 + 0.5)
    d = detect(_img(mask, 1))
    assert d.aspect > 1.25 and d.shape is None


def test_the_score_rises_as_a_bar_gets_squarer():
    """Below the bar the shaped reward still points to success: squarer and cleaner scores higher."""
    imgs = np.stack([_img(_rect(6, 12), 2), _img(_rect(8, 12), 2), _img(_rect(10, 12), 2)])
    s = score_images(imgs, ["a blue square"] * 3)
    assert s["score"][0] < s["score"][1] < 0.5 and s["aligned"].tolist() == [False, False, True]


def test_a_disc_cut_by_the_image_border_is_not_a_circle():
    # a disc of radius 6 centred 3.5 pixels below the top edge: a shield flattened against the border, which fits the
    # circle template inside its own box (IoU 0.88) and passed every other check; the learned-weight mixture drew
    # "a green circle" so (bench/RESULTS.md, "Shapes cut by the image border")
    img = _img(shape_mask(0, 7.5, 3.5, 6.0), 1)
    d = detect(img)
    assert d.ious[0] == max(d.ious) and d.ious[0] >= 0.7 and d.border_pixels > MAX_BORDER_PIXELS
    assert d.shape is None
    assert not score_images(img[None], ["a green circle"])["aligned"][0]
    inside = np.roll(img, 2, axis=1)  # the same blob moved off the border (no longer cut off) is judged on its shape
    assert detect(inside).border_pixels == 0


@pytest.mark.parametrize("shape, cx, cy, r", [(0, 5.0, 5.0, 5.0), (2, 4.5, 4.5, 4.5), (2, 5.0, 5.0, 5.0)])
def test_a_whole_shape_that_grazes_the_border_is_still_detected(shape, cx, cy, r):
    d = detect(_img(shape_mask(shape, cx, cy, r), 2))  # centre r from two sides: the shape just reaches the frame
    assert 0 < d.border_pixels <= MAX_BORDER_PIXELS and d.shape == shape
    cut = detect(_img(shape_mask(shape, cx - 1.0, cy - 1.0, r), 2))  # one pixel further: cut by the frame
    assert cut.border_pixels > MAX_BORDER_PIXELS and cut.shape is None


def test_the_worlds_images_never_reach_the_border():
    images, _ = make_dataset(2000, seed=3, balanced=True)
    fg = images.max(axis=1) > 0
    assert not (fg[:, 0].any() or fg[:, -1].any() or fg[:, :, 0].any() or fg[:, :, -1].any())
