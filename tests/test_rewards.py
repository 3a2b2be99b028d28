"""Reward specs, the CLIP-family rewards on a tiny random-weight CLIP saved to disk, weighted sums, bad input."""

import numpy as np
import pytest
import torch

from find_rl.rewards import ClipScore, RewardSpec, ShapesReward, WeightedReward, make_reward, score_batch


def test_spec_parsing():
    assert RewardSpec.parse("shapes") == RewardSpec("shapes", None, 1.0)
    assert RewardSpec.parse("clip=/m/clip:0.5") == RewardSpec("clip", "/m/clip", 0.5)
    assert RewardSpec.parse("pickscore=org/name") == RewardSpec("pickscore", "org/name", 1.0)
    assert RewardSpec.parse("clip=/odd:dir/clip") == RewardSpec("clip", "/odd:dir/clip", 1.0)  # ':' in a path
    assert RewardSpec.parse("shapes-strict:-2") == RewardSpec("shapes-strict", None, -2.0)
    for bad, msg in [("nope", "unknown reward"), ("clip", "needs a model"), ("shapes=/x", "takes no path"),
                     ("clip=/x:0", "non-zero"), ("clip=/x:nan", "non-zero")]:
        with pytest.raises(ValueError, match=msg):
            RewardSpec.parse(bad)


def _images(n, seed=0):
    return torch.rand(n, 3, 20, 20, generator=torch.Generator().manual_seed(seed)).numpy() * 2 - 1


def test_clip_score_matches_clipmodel_logits(tiny_clip):
    from transformers import AutoTokenizer, CLIPModel

    prompts = ["a dog", "a cat", "a dog"]
    imgs = _images(3)
    pick = ClipScore(tiny_clip, scale="logit")
    clip = ClipScore(tiny_clip, scale="fixed")
    s_pick, s_clip = pick(imgs, prompts), clip(imgs, prompts)
    assert s_pick.shape == (3,) and np.isfinite(s_pick).all()
    # the same preprocessing fed to CLIPModel.forward: logits_per_image[i, i] = logit_scale * cos(image_i, text_i)
    model = CLIPModel.from_pretrained(tiny_clip).eval()
    tok = AutoTokenizer.from_pretrained(tiny_clip)(prompts, padding=True, return_tensors="pt")
    x = torch.nn.functional.interpolate((torch.as_tensor(imgs) + 1) / 2, size=(32, 32), mode="bicubic", antialias=True)
    x = (x - torch.tensor(pick.mean)[:, None, None]) / torch.tensor(pick.std)[:, None, None]
    with torch.no_grad():
        logits = model(input_ids=tok.input_ids, attention_mask=tok.attention_mask, pixel_values=x).logits_per_image
    np.testing.assert_allclose(s_pick, torch.diagonal(logits).numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(s_clip, s_pick / model.logit_scale.exp().item() * 100, rtol=1e-4, atol=1e-4)
    assert s_pick[0] != s_pick[2] or not np.allclose(imgs[0], imgs[2])  # scores follow the image, not only the prompt
    np.testing.assert_array_equal(pick(imgs, prompts), s_pick)  # cached text embeddings give the same scores


def test_weighted_sum_of_rewards(tiny_clip):
    prompts = ["a dog", "a cat"]
    imgs = _images(2, seed=1)
    one = make_reward(f"clip={tiny_clip}")(imgs, prompts)
    both = make_reward([f"clip={tiny_clip}:0.5", f"pickscore={tiny_clip}:-2"])(imgs, prompts)
    pick = ClipScore(tiny_clip, scale="logit")(imgs, prompts)
    np.testing.assert_allclose(both, 0.5 * one - 2 * pick, rtol=1e-5, atol=1e-4)


def test_single_detector_term_keeps_its_attributes():
    r = make_reward("shapes")
    assert isinstance(r, WeightedReward) and isinstance(r.terms[0][1], ShapesReward)
    out = score_batch(r, np.full((2, 3, 16, 16), -1.0, np.float32), ["a red square", "a blue circle"])
    assert set(out) >= {"score", "aligned", "valid"} and not out["aligned"].any()


def test_bad_reward_models_are_refused_in_one_line(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        make_reward(f"clip={tmp_path}/missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="could not load CLIP reward model"):
        make_reward(f"clip={tmp_path}/empty")
    with pytest.raises(ValueError, match="one per image"):
        score_batch(lambda im, p: np.zeros(len(p) + 1), np.zeros((2, 3, 4, 4), np.float32), ["a", "b"])
