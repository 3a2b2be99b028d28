"""The world seam: both embedded worlds behind one interface, taken by name, and the commands' use of it."""

import json

import numpy as np
import pytest

from find_rl.rewards.registry import WorldReward, make_reward
from find_rl.worlds import WORLD_NAMES, World, get_world, world_of_model


@pytest.mark.parametrize("name", WORLD_NAMES)
def test_each_world_implements_the_seam(name):
    w = get_world(name)
    assert isinstance(w, World) and w.name == name and (w.model_dir.name == "model")
    prompts = w.prompts()
    assert len(prompts) == len(set(prompts)) >= 9
    defaults, evals = w.default_prompts(), w.eval_prompts()
    assert defaults and set(defaults) <= set(prompts) and set(evals) <= set(prompts)
    assert all(w.split_of(p) == "rare" for p in defaults)  # the default training set: prompts the model rarely draws
    for p in prompts[:: max(1, len(prompts) // 50)]:
        w.check_prompt(p)
    with pytest.raises(ValueError, match="purple"):
        w.check_prompt("a purple circle")
    assert get_world(name) is w and world_of_model(name) is w
    assert list(w.pipeline_classes) and all(":" in v for v in w.pipeline_classes.values())


def test_an_unknown_world_is_one_line():
    with pytest.raises(ValueError, match="unknown world 'planet'; use one of shapes, scenes"):
        get_world("planet")


def test_the_shapes_world_scores_with_its_detector_and_a_strict_verdict_from_the_same_pass():
    from find_rl.worlds.shapes.world import make_dataset

    w = get_world("shapes")
    images, combos = make_dataset(64, seed=3, balanced=True)
    prompts = [w.prompts()[k] for k in combos]
    out = w.score(images, prompts)
    assert out["aligned"].mean() > 0.95 and set(out) >= {"score", "aligned", "strict"}
    assert (out["strict"] <= out["aligned"]).all()
    assert np.array_equal(w.score(images, prompts, strict=True)["aligned"], out["strict"])
    assert w.factors(images, prompts) is None  # shapes measures diversity on pixels
    assert {w.split_of(p) for p in w.prompts()} == {"common", "rare"} and w.category_of("a red circle") is None


def test_the_scenes_world_scores_ground_truth_and_labels_each_prompt():
    from find_rl.worlds.scenes.render import render_prompts

    w = get_world("scenes")
    prompts = ["a red circle", "two blue squares", "a red circle left of a blue square", "a cross and a triangle"]
    images = render_prompts(prompts, np.random.default_rng(0))
    out = w.score(images, prompts)
    assert out["aligned"].all() and (out["score"] == 1.0).all()
    assert (w.score(images[::-1].copy(), prompts)["score"] < 1).any()  # wrong images are not aligned
    assert [w.category_of(p) for p in prompts] == ["colors", "counting", "position", "two_object"]
    f = w.factors(images, prompts)
    assert f.shape[0] == 4 and np.isfinite(f[0, :3]).all() and np.isnan(f[0, 3:]).all()  # one object: the rest NaN
    assert {w.split_of(p) for p in w.eval_prompts()} == {"common", "rare", "policy", "unseen_pairs", "unseen_relations",
                                                         "swapped"}


def test_each_worlds_exact_scorer_is_a_reward_by_the_worlds_name():
    for name in WORLD_NAMES:
        assert isinstance(make_reward(name).terms[0][1], WorldReward)
        assert make_reward(f"{name}-strict").terms[0][1].strict


def test_evaluate_labels_every_prompt_with_its_split_and_category(tmp_path):
    from find_rl import evaluate

    out = tmp_path / "base.json"
    assert evaluate.main(["--policy", "base", "--samples", "4", "--prompts", "a red circle", "a green circle",
                          "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["prompts"]["a red circle"]["split"] == "common" and res["prompts"]["a green circle"]["split"] == "rare"
    assert {s["split"] for s in res["summary"]} == {"common", "rare"}


@pytest.mark.slow
def test_train_and_evaluate_run_on_the_scenes_world(ray_local, tmp_path, capsys):
    """``--world scenes`` end to end at a tiny budget: its model, its exact scorer as the reward, its labels."""
    from find_rl import evaluate, train

    out = tmp_path / "run"
    assert train.main(["--world", "scenes", "--out", str(out), "--prompts", "two cyan triangles", "a cyan triangle",
                       "--iterations", "2", "--samples-per-prompt", "4", "--eval-samples", "8"]) == 0
    meta = json.loads((out / "noise_policy.json").read_text())
    assert meta["model"] == "scenes" and meta["latent_shape"] == [3, 32, 32]
    from find_rl.core.settings import WORLD_SAMPLER

    assert {k: meta["sampler"][k] for k in WORLD_SAMPLER["scenes"]} == WORLD_SAMPLER["scenes"]  # the world's own sampler
    assert "scenes world's exact scorer" in (out / "results.md").read_text()
    assert "sampler: UniPC, 15 steps, guidance 3.0 on the first 4 steps (rescale 0.7)" in (out / "results.md").read_text()
    assert "aligned factor diversity kept |" in (out / "results.md").read_text()  # the shipped reference has these prompts
    capsys.readouterr()
    assert evaluate.main(["--policy", str(out), "--samples", "4", "--json", str(tmp_path / "e.json")]) == 0
    res = json.loads((tmp_path / "e.json").read_text())["prompts"]
    assert res["two cyan triangles"]["category"] == "counting" and res["a cyan triangle"]["category"] == "colors"
    assert {r["split"] for r in res.values()} <= {"common", "rare", "policy"}
    assert all(r.get("aligned_factor_diversity", "absent") != "absent" for r in res.values())
