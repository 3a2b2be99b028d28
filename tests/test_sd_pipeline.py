"""Exported noise in a plain Stable Diffusion pipeline: a tiny random-weight SD built offline, saved, and loaded
through the same ``from_pretrained`` code a real checkpoint uses (tokenizer from a tiny vocabulary included)."""

import numpy as np
import pytest
import torch

from find_rl import generate
from find_rl.export import NoisePolicy, save_policy
from find_rl.models import load_pipeline
from find_rl.sampler import DiffusionSampler


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
    assert len(list((tmp_path / "png").glob("*.png"))) == 2
    # a policy whose latent does not fit the model is refused in one line
    bad = NoisePolicy(prompts=["a green dog"], mean=torch.zeros(1, 3, 16, 16), std=torch.ones(1, 3, 16, 16), model=tiny_sd)
    save_policy(tmp_path / "bad", bad)
    with pytest.raises(ValueError, match="does not fit"):
        generate.generate(policy=str(tmp_path / "bad"), prompt="a green dog", num_images=1, out=tmp_path / "x")
