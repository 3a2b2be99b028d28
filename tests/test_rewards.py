"""Reward specs, the CLIP-family rewards on a tiny random-weight CLIP saved to disk, weighted sums, bad input."""

import numpy as np
import pytest
import torch

from find_rl.rewards.registry import ClipScore, RewardSpec, WorldReward, WeightedReward, make_reward, score_batch


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
    assert isinstance(r, WeightedReward) and isinstance(r.terms[0][1], WorldReward)
    out = score_batch(r, np.full((2, 3, 16, 16), -1.0, np.float32), ["a red square", "a blue circle"])
    assert set(out) >= {"score", "aligned", "valid"} and not out["aligned"].any()


def _drawn_right_and_wrong(world: str) -> tuple[np.ndarray, str]:
    """Two ground-truth images of the prompt and two near misses the shaped reward pays partial credit: scenes, ``a red
    circle`` and two blue circles; shapes, ``a red square`` and two red circles."""
    if world == "scenes":
        from find_rl.worlds.scenes.render import render_prompts

        rng = np.random.default_rng(0)
        return render_prompts(["a red circle"] * 2 + ["a blue circle"] * 2, rng), "a red circle"
    from find_rl.worlds.shapes.world import render

    return np.stack([render(shape, 0, 7.5, 8.0, 5.0) for shape in (1, 1, 0, 0)]), "a red square"


@pytest.mark.parametrize("world", ["shapes", "scenes"])
def test_the_binary_world_reward_pays_the_verdict_alone(world):
    """``NAME-binary``: 1 exactly on the aligned images and 0 on the rest, where the shaped reward pays partial credit."""
    images, prompt = _drawn_right_and_wrong(world)
    prompts = [prompt] * len(images)
    shaped = make_reward(world)(images, prompts)
    out = make_reward(f"{world}-binary").score(images, prompts)
    np.testing.assert_array_equal(out["aligned"], [True, True, False, False])
    np.testing.assert_array_equal(out["score"], [1.0, 1.0, 0.0, 0.0])
    assert out["score"].dtype == np.float32 and (shaped[2:] > 0).all() and (shaped[:2] == 1).all()


def test_bad_reward_models_are_refused_in_one_line(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        make_reward(f"clip={tmp_path}/missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="could not load CLIPModel reward model"):
        make_reward(f"clip={tmp_path}/empty")
    with pytest.raises(ValueError, match="one per image"):
        score_batch(lambda im, p: np.zeros(len(p) + 1), np.zeros((2, 3, 4, 4), np.float32), ["a", "b"])


def test_clip_scores_a_video_as_the_mean_over_its_frames(tiny_clip):
    r = ClipScore(tiny_clip)
    video = torch.rand(2, 3, 3, 20, 20, generator=torch.Generator().manual_seed(2)).numpy() * 2 - 1
    per_frame = np.stack([r(video[:, f], ["a dog", "a cat"]) for f in range(3)], axis=1)
    np.testing.assert_allclose(r(video, ["a dog", "a cat"]), per_frame.mean(1), rtol=1e-5, atol=1e-4)


def test_xclip_matches_xclipmodel_logits(tiny_xclip):
    from transformers import AutoTokenizer, XCLIPModel

    from find_rl.rewards.registry import XClipScore

    r = XClipScore(tiny_xclip)
    video = torch.rand(3, 7, 3, 20, 20, generator=torch.Generator().manual_seed(3)).numpy() * 2 - 1
    prompts = ["a dog", "a cat", "a dog"]
    got = r(video, prompts)
    alone = r(video[1:2], ["a cat"])
    np.testing.assert_allclose(got[1], alone[0], rtol=1e-4, atol=1e-4)  # a score does not depend on the batch
    # by hand: 4 evenly spaced frames of 7 (0, 2, 4, 6), CLIP-normalised, through XCLIPModel.forward
    model = XCLIPModel.from_pretrained(tiny_xclip).eval()
    tok = AutoTokenizer.from_pretrained(tiny_xclip)(["a dog", "a cat"], padding=True, return_tensors="pt")
    x = torch.as_tensor(video)[:, [0, 2, 4, 6]].flatten(0, 1)
    x = torch.nn.functional.interpolate((x + 1) / 2, size=(32, 32), mode="bicubic", antialias=True)
    x = ((x - torch.tensor(r.mean)[:, None, None]) / torch.tensor(r.std)[:, None, None]).reshape(3, 4, 3, 32, 32)
    with torch.no_grad():
        logits = model(**tok, pixel_values=x).logits_per_video
    want = logits[torch.arange(3), torch.tensor([0, 1, 0])] * 100 / model.logit_scale.exp().detach()
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="videos of shape"):
        r(_images(2), ["a", "b"])


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_aesthetic_head_on_clip_embedding(tiny_aesthetic, tiny_clip, tmp_path, fmt):
    import shutil

    from safetensors.torch import load_file

    from find_rl.rewards.registry import AestheticScore

    state = load_file(f"{tiny_aesthetic}/aesthetic_head.safetensors")
    folder = tiny_aesthetic
    if fmt == "pth":  # the released head is a torch pickle: read with weights_only=True
        folder = tmp_path / "aesthetic"
        shutil.copytree(tiny_aesthetic, folder)
        (folder / "aesthetic_head.safetensors").unlink()
        torch.save(state, folder / "sac+logos+ava1-l14-linearMSE.pth")
    r = make_reward(f"aesthetic={folder}")
    assert isinstance(r.terms[0][1], AestheticScore)
    imgs = _images(3, seed=4)
    got = r(imgs, ["x", "y", "z"])
    h = ClipScore(tiny_clip)._image_embeddings(imgs)  # the L2-normalised image embedding (same CLIP weights)
    for layer in (0, 2, 4, 6, 7):
        h = h @ state[f"layers.{layer}.weight"].T + state[f"layers.{layer}.bias"]
    np.testing.assert_allclose(got, h.squeeze(1).numpy(), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="no aesthetic head"):
        make_reward(f"aesthetic={tiny_clip}")


def test_a_pipeline_without_prompt_and_latents_is_refused(tmp_path):
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    from find_rl.diffusion.sampler import DiffusionSampler

    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16), norm_num_groups=4,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(tmp_path / "ddpm")
    with pytest.raises(ValueError, match="does not take prompt= and latents="):
        DiffusionSampler.from_pretrained(str(tmp_path / "ddpm"))
