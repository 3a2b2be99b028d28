"""The shapes detector on hand-drawn images: each attribute right and wrong, near-shapes, real data."""

import numpy as np
import pytest

from find_rl.shapes.detector import STRICT_IOU, detect, score_images
from find_rl.shapes.world import all_prompts, make_dataset, render, shape_mask


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

    from find_rl.sampler import DiffusionSampler
    from find_rl.shapes.detector import DEFAULT_IOU

    prompts = ["a blue circle"] * 96 + ["a blue triangle"] * 96
    noise = torch.randn(len(prompts), 3, 16, 16, generator=torch.Generator().manual_seed(0))
    images = DiffusionSampler.from_pretrained("shapes").sample(noise, prompts).images
    lenient = score_images(images, prompts, min_iou=DEFAULT_IOU)
    strict = score_images(images, prompts, min_iou=STRICT_IOU)["aligned"]
    assert np.array_equal(lenient["aligned"] & (lenient["shape_iou"] >= STRICT_IOU), strict)
    assert lenient["aligned"].sum() > strict.sum() > 0
