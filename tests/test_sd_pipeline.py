"""Exported noise in a plain Stable Diffusion pipeline: a tiny random-weight SD built offline, saved, and loaded
through the same ``from_pretrained`` code a real checkpoint uses (tokenizer from a tiny vocabulary included)."""

import numpy as np
import pytest
import torch

from find_rl import generate
from find_rl.policies.export import NoisePolicy, save_policy
from find_rl.diffusion.models import load_pipeline
from find_rl.diffusion.sampler import DiffusionSampler, SamplerSettings


def test_sampler_reads_latent_shape_and_uses_ddim(tiny_sd):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipe = load_pipeline(tiny_sd)
    assert isinstance(pipe, StableDiffusionPipeline)
    s = DiffusionSampler(pipe)
    assert isinstance(pipe.scheduler, DDIMScheduler)  # PNDM swapped for DDIM: eta 0 makes the image a function of z
    assert s.latent_shape == (4, 8, 8)
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    a = s.sample(z, ["a dog", "a cat"]).images
    b = s.sample(z, ["a dog", "a cat"]).images
    assert a.shape == (2, 3, 16, 16) and np.array_equal(a, b) and a.min() >= -1 and a.max() <= 1


def test_exported_policy_drives_the_sd_pipeline_through_generate(tiny_sd, tmp_path):
    pol = NoisePolicy(prompts=["a green dog"], mean=torch.full((1, 4, 8, 8), 0.3), std=torch.full((1, 4, 8, 8), 0.8),
                      model=tiny_sd, sampler={"num_inference_steps": 3, "guidance_scale": 7.5, "eta": 0.0,
                                              "device": "cpu", "dtype": "float32"})
    save_policy(tmp_path / "pol", pol)
    assert generate.main(["--policy", str(tmp_path / "pol"), "--prompt", "a green dog", "--num-images", "2",
                          "--out", str(tmp_path / "png")]) == 0
    assert len(list((tmp_path / "png").glob("0*.png"))) == 2 and (tmp_path / "png" / "grid.png").is_file()
    # a policy whose latent does not fit the model is refused in one line
    bad = NoisePolicy(prompts=["a green dog"], mean=torch.zeros(1, 3, 16, 16), std=torch.ones(1, 3, 16, 16), model=tiny_sd)
    save_policy(tmp_path / "bad", bad)
    with pytest.raises(ValueError, match="does not fit"):
        generate.generate(policy=str(tmp_path / "bad"), prompt="a green dog", num_images=1, out=tmp_path / "x")


def test_sdxl_pipeline_loads_and_samples(tiny_sdxl):
    from diffusers import DDIMScheduler, StableDiffusionXLPipeline

    s = DiffusionSampler.from_pretrained(tiny_sdxl, SamplerSettings(num_inference_steps=2, guidance_scale=5.0))
    assert isinstance(s.pipeline, StableDiffusionXLPipeline) and isinstance(s.pipeline.scheduler, DDIMScheduler)
    assert s.latent_shape == (4, 8, 8) and not s.is_video
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    a, b = s.sample(z, ["a dog", "a cat"]).images, s.sample(z, ["a dog", "a cat"]).images
    assert a.shape == (2, 3, 16, 16) and np.array_equal(a, b)


def test_text_to_video_pipeline_latent_has_frames_and_generate_writes_gifs(tiny_t2v, tmp_path):
    from diffusers import TextToVideoSDPipeline

    s = DiffusionSampler.from_pretrained(tiny_t2v, SamplerSettings(num_inference_steps=2, num_frames=3))
    assert isinstance(s.pipeline, TextToVideoSDPipeline) and s.is_video
    assert s.latent_shape == (4, 3, 8, 8)  # (channels, frames, h, w), read from the pipeline and the settings
    assert DiffusionSampler.from_pretrained(tiny_t2v).latent_shape == (4, 16, 8, 8)  # the pipeline's default 16 frames
    z = torch.randn(2, 4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    v1, v2 = s.sample(z, ["a dog", "a cat"]).images, s.sample(z, ["a dog", "a cat"]).images
    assert v1.shape == (2, 3, 3, 16, 16) and np.array_equal(v1, v2) and v1.min() >= -1 and v1.max() <= 1
    with pytest.raises(ValueError, match="expected"):
        s.sample(torch.randn(2, 4, 8, 8), ["a dog", "a cat"])  # image-shaped noise for a video model
    pol = NoisePolicy(prompts=["a dog"], mean=torch.zeros(1, 4, 3, 8, 8), std=torch.ones(1, 4, 3, 8, 8), model=tiny_t2v,
                      sampler={"num_inference_steps": 2, "guidance_scale": 1.0, "eta": 0.0, "device": "cpu",
                               "dtype": "float32", "num_frames": 3})
    save_policy(tmp_path / "pol", pol)
    paths = generate.generate(policy=str(tmp_path / "pol"), prompt="a dog", num_images=2, out=tmp_path / "gif")
    from PIL import Image

    assert [p.suffix for p in paths] == [".gif", ".gif"] and Image.open(paths[0]).n_frames == 3


def test_animatediff_pipeline_samples_videos_from_the_given_noise(tiny_animatediff):
    """AnimateDiff (an SD UNet joined with a MotionAdapter): the noise enters through latents= like every other
    pipeline, with a frame axis; the same noise gives the same clip, other noise another."""
    from diffusers import AnimateDiffPipeline, DDIMScheduler

    s = DiffusionSampler.from_pretrained(tiny_animatediff, SamplerSettings(num_inference_steps=2, num_frames=3))
    assert isinstance(s.pipeline, AnimateDiffPipeline) and isinstance(s.pipeline.scheduler, DDIMScheduler) and s.is_video
    assert s.latent_shape == (4, 3, 8, 8)
    assert DiffusionSampler.from_pretrained(tiny_animatediff).latent_shape == (4, 16, 8, 8)  # the pipeline's default
    g = torch.Generator().manual_seed(0)
    z, other = torch.randn(2, 4, 3, 8, 8, generator=g), torch.randn(2, 4, 3, 8, 8, generator=g)
    a, b, c = (s.sample(n, ["a dog", "a cat"]).images for n in (z, z, other))
    assert a.shape == (2, 3, 3, 16, 16) and np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.min() >= -1 and a.max() <= 1
