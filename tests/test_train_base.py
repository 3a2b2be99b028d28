"""The shapes model's training command is seeded and reproducible, and its output loads via from_pretrained."""

import torch

from find_rl.diffusion.models import load_pipeline
from find_rl.worlds.shapes.train_base import train


def _weights(pipe):
    return {**{f"unet.{k}": v for k, v in pipe.unet.state_dict().items()},
            **{f"text.{k}": v for k, v in pipe.text_encoder.state_dict().items()}}


def test_same_seed_same_weights_different_seed_different(tmp_path):
    kw = dict(steps=6, num_images=512, batch_size=32, log_every=0)
    a, b, c = train(seed=0, **kw), train(seed=0, **kw), train(seed=1, **kw)
    wa, wb, wc = _weights(a), _weights(b), _weights(c)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)
    a.save_pretrained(tmp_path / "m", safe_serialization=True)
    loaded = load_pipeline(str(tmp_path / "m"))
    assert all(torch.equal(wa[k], _weights(loaded)[k]) for k in wa)


def test_shipped_model_shows_the_problem_find_fixes():
    """The committed baseline (written by train_base via `evaluate --policy base`) has rare < 0.5 and common > 0.85
    (0.885 under the mended detector, which refuses the model's 1.25-1.4 rectangles as squares)."""
    import json

    from find_rl.worlds import get_world

    SHAPES_MODEL_DIR = get_world("shapes").model_dir

    base = json.loads((SHAPES_MODEL_DIR / "baseline.json").read_text())
    assert base["samples"] >= 256
    rare = [v["alignment"] for v in base["prompts"].values() if v["rare"]]
    common = [v["alignment"] for v in base["prompts"].values() if not v["rare"]]
    assert len(rare) == 6 and len(common) == 3
    assert sum(rare) / 6 < 0.5 and sum(common) / 3 > 0.85
    assert "Rare prompts average" in (SHAPES_MODEL_DIR / "README.md").read_text()


def test_train_base_cli_refuses_bad_flags_and_keeps_an_existing_pipeline(tmp_path, capsys):
    from find_rl.worlds.shapes.train_base import main

    for argv, msg in ((["--steps", "0"], "--steps must be >= 1"), (["--lr", "nan"], "--lr must be a finite number > 0"),
                      (["--rare-p", "0.5"], "leaves no mass"), (["--batch-size", "0"], "--batch-size must be >= 1"),
                      (["--threads", "0"], "--threads must be >= 1"), (["--eval-samples", "1"], "--eval-samples must be >= 2")):
        assert main(["--out", str(tmp_path / "new"), *argv]) == 2
        errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and msg in errors[0], errors
    assert not (tmp_path / "new").exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "model_index.json").write_text("{}")
    assert main(["--out", str(kept), "--steps", "1"]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert (kept / "model_index.json").read_text() == "{}"
