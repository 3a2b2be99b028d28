"""Exported distributions: format, loading in a plain diffusers pipeline, generate/evaluate CLIs, bad files."""

import json

import numpy as np
import pytest
import torch

from find_rl import evaluate, generate
from find_rl.policies.export import META_FILE, TENSORS_FILE, NoisePolicy, load_policy, save_policy
from find_rl.diffusion.models import load_pipeline

PROMPTS = ["a green circle", "a red square"]


@pytest.fixture
def policy_dir(tmp_path):
    mean = torch.zeros(2, 3, 16, 16)
    mean[0, 1] = 0.8  # push the green channel of prompt 0
    pol = NoisePolicy(prompts=PROMPTS, mean=mean, std=torch.full((2, 3, 16, 16), 0.9),
                      sampler={"num_inference_steps": 10, "guidance_scale": 1.0, "eta": 0.0, "device": "cpu", "dtype": "float32"})
    return save_policy(tmp_path / "pol", pol)


def test_round_trip_and_sampling(policy_dir):
    pol = load_policy(policy_dir)
    assert pol.prompts == PROMPTS and pol.latent_shape == (3, 16, 16)
    meta = json.loads((policy_dir / META_FILE).read_text())
    assert meta["format"] == "find_rl.noise_policy" and meta["latent_shape"] == [3, 16, 16]
    z = pol.sample("a green circle", 4000, generator=torch.Generator().manual_seed(0))
    assert z[:, 1].mean().item() == pytest.approx(0.8, abs=0.02)
    assert (z - pol.mean[0]).std().item() == pytest.approx(0.9, abs=0.02)
    with pytest.raises(ValueError, match="not in this policy"):
        pol.sample("a blue square", 1)


def test_exported_noise_drives_a_plain_diffusers_pipeline(policy_dir):
    pol = load_policy(policy_dir)
    pipe = load_pipeline("shapes")
    latents = pol.sample("a green circle", 3, generator=torch.Generator().manual_seed(0))
    images = pipe(["a green circle"] * 3, latents=latents, num_inference_steps=10).images
    assert images.shape == (3, 3, 16, 16) and np.isfinite(images).all()


@pytest.mark.parametrize("corrupt", ["meta_json", "meta_format", "tensor_bytes", "tensor_shape", "nan", "missing"])
def test_bad_policy_files_give_one_line_errors(policy_dir, corrupt):
    if corrupt == "meta_json":
        (policy_dir / META_FILE).write_text("{oops")
    elif corrupt == "meta_format":
        (policy_dir / META_FILE).write_text(json.dumps({"format": "something-else"}))
    elif corrupt == "tensor_bytes":
        (policy_dir / TENSORS_FILE).write_bytes(b"\x00" * 20)
    elif corrupt == "tensor_shape":
        meta = json.loads((policy_dir / META_FILE).read_text())
        meta["latent_shape"] = [4, 64, 64]
        (policy_dir / META_FILE).write_text(json.dumps(meta))
    elif corrupt == "nan":
        from safetensors.torch import save_file

        save_file({"mean": torch.full((2, 3, 16, 16), float("nan")), "std": torch.ones(2, 3, 16, 16)}, str(policy_dir / TENSORS_FILE))
    else:
        (policy_dir / TENSORS_FILE).unlink()
    with pytest.raises(ValueError) as e:
        load_policy(policy_dir)
    assert "\n" not in str(e.value)


def test_generate_cli_base_and_policy(tmp_path, policy_dir, capsys):
    assert generate.main(["--policy", "base", "--prompt", "a green circle", "--num-images", "3", "--out", str(tmp_path / "b")]) == 0
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["0000.png", "0001.png", "0002.png", "grid.png"]
    from PIL import Image

    tile, grid = Image.open(tmp_path / "b" / "0000.png"), Image.open(tmp_path / "b" / "grid.png")
    assert grid.width > 3 * tile.width and grid.height > tile.height  # three tiles under a caption line
    assert generate.main(["--policy", str(policy_dir), "--prompt", "a red square", "--num-images", "2", "--out", str(tmp_path / "p")]) == 0
    assert len(list((tmp_path / "p").glob("0*.png"))) == 2
    assert generate.main(["--policy", str(policy_dir), "--prompt", "a blue square", "--num-images", "2", "--out", str(tmp_path / "x")]) == 2
    assert "not in this policy" in capsys.readouterr().err
    assert generate.main(["--policy", "base", "--prompt", "a purple square", "--out", str(tmp_path / "y")]) == 2
    capsys.readouterr()
    for argv, msg in ((["--threads", "0"], "--threads must be >= 1"), (["--scale", "0"], "--scale must be >= 1"),
                      (["--device", "cpux"], "is not a torch device")):
        assert generate.main(["--policy", "base", "--prompt", "a green circle", "--out", str(tmp_path / "z"), *argv]) == 2
        errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and msg in errors[0], errors
    assert not (tmp_path / "z").exists()


def test_evaluate_cli_base_json_schema(tmp_path, capsys):
    out = tmp_path / "base.json"
    assert evaluate.main(["--policy", "base", "--samples", "8", "--prompts", "a red circle", "a green circle", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    for p in ("a red circle", "a green circle"):
        r = res["prompts"][p]
        assert set(r) >= {"alignment", "strict_alignment", "diversity", "samples", "rare"}
        assert r["samples"] == 8 and 0 <= r["strict_alignment"] <= r["alignment"] <= 1 and r["diversity"] > 0
    assert res["prompts"]["a green circle"]["rare"] is True and res["prompts"]["a red circle"]["rare"] is False
    assert "a green circle" in capsys.readouterr().out


def test_evaluate_scores_a_policy_like_base(policy_dir):
    base = evaluate.evaluate_distributions(prompts=PROMPTS, samples=16, seed=5)
    same = evaluate.evaluate_distributions(prompts=PROMPTS, mean=torch.zeros(2, 3, 16, 16), std=torch.ones(2, 3, 16, 16),
                                           samples=16, seed=5)
    assert base == same  # N(0, I) through the policy path is exactly the base path
    res = evaluate.evaluate_policy(str(policy_dir), samples=8)
    assert list(res["prompts"]) == PROMPTS


def test_evaluate_cli_bad_input(tmp_path, capsys):
    assert evaluate.main(["--policy", str(tmp_path), "--samples", "4"]) == 2
    assert "not an exported find_rl policy" in capsys.readouterr().err
    assert evaluate.main(["--policy", "base", "--prompts", "a purple circle", "--samples", "4"]) == 2
    capsys.readouterr()
    for argv, msg in ((["--samples", "1"], "--samples must be >= 2"), (["--threads", "0"], "--threads must be >= 1"),
                      (["--device", "cpux", "--samples", "4"], "is not a torch device")):
        assert evaluate.main(["--policy", "base", *argv]) == 2
        errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and msg in errors[0], errors


def test_wilson_interval_and_diversity():
    lo, hi = evaluate.wilson_interval(0, 10)
    assert lo == 0.0 and 0.2 < hi < 0.35
    assert evaluate.diversity(np.zeros((5, 3, 4, 4))) == 0.0
    two = np.stack([np.zeros(4), np.full(4, 1.0)])
    assert evaluate.diversity(two) == pytest.approx(2.0)
