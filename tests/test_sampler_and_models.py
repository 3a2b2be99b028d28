"""The sampler (determinism, batching, input checks) and model loading through from_pretrained."""

import json
import shutil

import numpy as np
import pytest
import torch

from find_rl.diffusion.models import load_pipeline
from find_rl.worlds import get_world

SHAPES_MODEL_DIR = get_world("shapes").model_dir
from find_rl.diffusion.sampler import DiffusionSampler, SamplerSettings
from find_rl.worlds.shapes.pipeline import ShapesPipeline


def test_shipped_model_loads_and_is_frozen():
    pipe = load_pipeline("shapes")
    assert isinstance(pipe, ShapesPipeline)
    assert not any(p.requires_grad for p in pipe.unet.parameters())
    assert sum(p.numel() for p in pipe.unet.parameters()) < 400_000
    sizes = sum(f.stat().st_size for f in SHAPES_MODEL_DIR.rglob("*.safetensors"))
    assert sizes < 4_000_000


def test_same_noise_same_image_and_batch_independence():
    s = DiffusionSampler.from_pretrained("shapes")
    z = torch.randn(4, *s.latent_shape, generator=torch.Generator().manual_seed(1))
    prompts = ["a green circle", "a red square", "a blue triangle", "a red circle"]
    a = s.sample(z, prompts).images
    b = s.sample(z.reshape(4, -1).numpy(), prompts).images  # flat numpy noise is accepted too
    assert a.shape == (4, 3, 16, 16) and a.dtype == np.float32
    assert np.array_equal(a, b)
    one = s.sample(z[1:2], prompts[1:2]).images
    assert np.allclose(one[0], a[1], atol=1e-5)  # one call renders the batch; rows do not interact
    assert a.min() >= -1 and a.max() <= 1


def test_eta_makes_sampling_stochastic():
    s = DiffusionSampler.from_pretrained("shapes", SamplerSettings(eta=1.0), seed=0)
    z = torch.randn(2, *s.latent_shape, generator=torch.Generator().manual_seed(1))
    assert not np.array_equal(s.sample(z, ["a red circle"] * 2).images, s.sample(z, ["a red circle"] * 2).images)


@pytest.mark.parametrize(
    "noise, msg",
    [(torch.zeros(2, 5), "expected"), (torch.full((2, 768), float("nan")), "NaN or inf"), (torch.full((2, 768), float("inf")), "NaN or inf")],
)
def test_bad_noise_is_refused(noise, msg):
    s = DiffusionSampler.from_pretrained("shapes")
    with pytest.raises(ValueError, match=msg):
        s.sample(noise, ["a red circle"] * 2)


def test_unknown_prompt_word_is_refused():
    s = DiffusionSampler.from_pretrained("shapes")
    with pytest.raises(ValueError, match="unknown word 'purple'"):
        s.sample(torch.zeros(1, 768), ["a purple circle"])


def test_settings_are_validated():
    with pytest.raises(ValueError, match="num-inference-steps"):
        SamplerSettings(num_inference_steps=0)
    with pytest.raises(ValueError, match="dtype"):
        SamplerSettings(dtype="float8")


def test_tiny_model_round_trips_through_from_pretrained(tiny_shapes_model):
    pipe = load_pipeline(tiny_shapes_model)
    assert isinstance(pipe, ShapesPipeline)
    assert json.loads((__import__("pathlib").Path(tiny_shapes_model) / "model_index.json").read_text())["_class_name"] == "ShapesPipeline"
    out = pipe(["a red circle"], latents=torch.zeros(1, 3, 16, 16)).images
    assert out.shape == (1, 3, 16, 16)


def test_missing_and_corrupt_models_give_clear_errors(tmp_path, tiny_shapes_model):
    with pytest.raises(ValueError, match="not found"):
        load_pipeline(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="no model_index.json"):
        load_pipeline(str(tmp_path))
    broken = tmp_path / "broken"
    shutil.copytree(tiny_shapes_model, broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="could not load model") as e:
        load_pipeline(str(broken))
    assert "\n" not in str(e.value)
    (broken / "model_index.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        load_pipeline(str(broken))


def test_shipped_model_drifts_on_a_rare_prompt_and_follows_a_common_one():
    """A fresh 64-sample check of the problem: 'a green circle' (2% of data) fails, 'a red circle' (29%) works."""
    from find_rl.evaluation.scoring import evaluate_distributions

    res = evaluate_distributions(prompts=["a green circle", "a red circle"], samples=64, seed=42)
    assert res["a green circle"]["alignment"] < 0.25
    assert res["a red circle"]["alignment"] > 0.85
