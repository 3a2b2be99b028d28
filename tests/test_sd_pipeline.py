"""Exported noise in a plain Stable Diffusion pipeline: a tiny random-weight SD built offline, saved, and loaded
through the same ``from_pretrained`` code a real checkpoint uses (tokenizer from a tiny vocabulary included)."""

import json
import string

import numpy as np
import pytest
import torch

from find_rl import generate
from find_rl.export import NoisePolicy, save_policy
from find_rl.models import load_pipeline
from find_rl.sampler import DiffusionSampler


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    root = tmp_path_factory.mktemp("sd")
    vocab = ["<|startoftext|>", "<|endoftext|>"] + list(string.ascii_lowercase) + [c + "</w>" for c in string.ascii_lowercase]
    (root / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (root / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(root / "vocab.json"), str(root / "merges.txt"), model_max_length=16)
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                                num_attention_heads=2, max_position_embeddings=16, bos_token_id=0, eos_token_id=1))
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                                attention_head_dim=4, norm_num_groups=8)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=8, sample_size=16)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=PNDMScheduler(skip_prk_steps=True, steps_offset=1), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    path = root / "tiny-sd"
    pipe.save_pretrained(path, safe_serialization=True)
    return str(path)


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
