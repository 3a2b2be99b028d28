"""`python -m find_rl.evaluate --methods ... --out DIR`: the comparison's arithmetic (fast) and one tiny end-to-end run."""

import json

import numpy as np
import pytest
import torch

from find_rl.compare import aggregate, criteria, mean_ci, parse_methods, time_to_reach


def test_parse_methods_accepts_the_documented_names_and_refuses_others():
    assert parse_methods("base,best-of-16,cem,ddpo,find") == ["base", "best-of-16", "cem", "ddpo", "find"]
    assert parse_methods("find-nocal, find-noclip,find-clamp,find-paper,amortized,amortized-all")[-1] == "amortized-all"
    assert parse_methods("cem-4x4,find-paper-4x4,find+anchor_coeff=0.01") == ["cem-4x4", "find-paper-4x4", "find+anchor_coeff=0.01"]
    for bad, msg in (("", "empty"), ("best-of-0", "unknown method"), ("dpok", "unknown method"), ("find,find", "twice")):
        with pytest.raises(ValueError, match=msg):
            parse_methods(bad)


def test_mean_ci_is_the_t_interval():
    m, h = mean_ci([0.8, 0.9, 1.0])
    assert m == pytest.approx(0.9) and h == pytest.approx(4.303 * 0.1 / np.sqrt(3), rel=1e-4)
    assert mean_ci([0.5]) == (0.5, 0.0)


def test_time_to_reach_uses_the_smoothed_training_curve():
    hist = [{"alignment": a, "wall_s": float(i + 1)} for i, a in enumerate([0.1, 0.9, 0.1, 0.9, 0.9, 0.9, 0.9, 0.9])]
    assert time_to_reach(hist, 0.9, window=1) == 2.0
    assert time_to_reach(hist, 0.9, window=5) == 8.0  # the first 5-iteration window averaging >= 0.9 ends at iteration 8
    assert time_to_reach(hist, 0.95, window=5) is None


def _run(align: dict, wall: float, evals: int, history=None, held=()):
    return {"per_prompt": {p: {"alignment": a, "strict_alignment": a / 2, "diversity": 10.0 * a + 1, "reward_evals": 0 if p in held else evals,
                               "held_out": p in held} for p, a in align.items()},
            "reward_evals": evals, "evals_per_image": 1, "wall_s": wall, "cpu_s": wall, "history": history or []}


def test_aggregate_and_criteria_from_hand_built_runs():
    prompts = ["a green circle", "a red square"]
    fast = [{"alignment": 0.95, "wall_s": 5.0}] * 5
    runs = {
        "base": [_run({"a green circle": 0.1, "a red square": 0.0}, 0, 0)] * 2,
        "cem": [_run({"a green circle": 0.4, "a red square": 0.2}, 50, 2560)] * 2,
        "find": [_run({"a green circle": 1.0, "a red square": 0.9}, 100, 2560, fast), _run({"a green circle": 0.9, "a red square": 0.8}, 100, 2560, fast)],
        "ddpo": [_run({"a green circle": 0.5, "a red square": 0.5}, 320, 2560, [{"alignment": 0.5, "wall_s": 300.0}])] * 2,
        "amortized": [_run({"a green circle": 0.3, "a red square": 0.8}, 120, 2560, held=("a green circle",))] * 2,
    }
    results, summary = aggregate(runs, prompts)
    assert set(results["find"]["a red square"]) >= {"alignment", "strict_alignment", "diversity", "reward_evals", "wall_s"}
    assert results["find"]["a green circle"]["alignment"] == pytest.approx(0.95)
    assert results["amortized"]["a green circle"]["reward_evals"] == 0 and results["amortized"]["a green circle"]["held_out"]
    assert summary["find"]["alignment"]["mean"] == pytest.approx(0.9)
    assert summary["base"]["diversity_kept"]["mean"] == pytest.approx(1.0)
    checks = criteria(runs, results, summary, prompts)
    assert checks["find_beats_cem"]["met"]
    assert checks["find_10x_faster_than_ddpo"]["speedup"] == pytest.approx(300 / 5.0) and checks["find_10x_faster_than_ddpo"]["met"]
    assert checks["amortized_beats_base_held_out"]["met"]  # 0.3 vs 0.1 on the held-out prompt
    within = checks["amortized_within_0.1_of_find_trained"]  # trained prompt: amortised 0.8 vs FIND 0.85
    assert within["amortized"] == pytest.approx(0.8) and within["find"] == pytest.approx(0.85) and within["met"]
    json.dumps(checks)  # plain JSON types only


def test_speed_criterion_reads_fresh_sample_checkpoints_when_both_have_them():
    """FIND's time is its first fresh-sample checkpoint at DDPO's final alignment, not its training-batch curve."""
    prompts = ["a green circle", "a red square"]

    def fresh(points):  # [(iteration, wall_s, alignment)]
        return [{"iteration": i, "reward_evals_per_prompt": 32 * i, "wall_s": w, "alignment": a} for i, w, a in points]

    batches = [{"alignment": 0.99, "wall_s": 1.0}] * 5  # the training batches look aligned at once; fresh samples do not
    find = _run({"a green circle": 0.9, "a red square": 0.9}, 100, 2560, batches) | {
        "fresh": fresh([(0, 0.0, 0.1), (10, 8.0, 0.4), (20, 16.0, 0.6), (30, 24.0, 0.8)])}
    ddpo = _run({"a green circle": 0.6, "a red square": 0.6}, 320, 2560, [{"alignment": 0.6, "wall_s": 320.0}]) | {
        "fresh": fresh([(0, 0.0, 0.1), (40, 200.0, 0.7)])}
    runs = {"find": [find, find], "ddpo": [ddpo, ddpo]}
    results, summary = aggregate(runs, prompts)
    c = criteria(runs, results, summary, prompts)["find_10x_faster_than_ddpo"]
    assert c["basis"] == "fresh-sample checkpoints"
    # the target is DDPO's final checkpoint on the checkpoints' own evaluator (0.7), not its 256-sample score (0.6)
    assert c["ddpo_final_alignment"] == pytest.approx(0.7) and c["ddpo_final_alignment_scored"] == pytest.approx(0.6)
    assert c["find_seconds_to_reach"] == [24.0, 24.0] and c["find_evals_to_reach"] == [960, 960]
    assert c["ddpo_seconds_to_reach"] == [200.0, 200.0]
    assert c["speedup"] == pytest.approx(320 / 24.0) and c["met"]
    del find["fresh"]  # an older run without checkpoints: the smoothed training batches, and the basis says so
    c = criteria(runs, results, summary, prompts)["find_10x_faster_than_ddpo"]
    assert c["basis"].startswith("training batches") and c["find_seconds_to_reach"] == [1.0, 1.0]


def test_method_result_rows_a_variant_like_its_method():
    from find_rl.compare.methods import MethodResult

    r = MethodResult({"a": {"alignment": 1.0}, "b": {"alignment": 0.5}}, 64, 1, 1.0, 1.0, held_out=("b",),
                     variants={" (eta 0)": {"a": {"alignment": 0.9}, "b": {"alignment": 0.4}}}).to_dict()
    assert r["variants"][" (eta 0)"]["a"] == {"alignment": 0.9, "held_out": False, "reward_evals": 64}
    assert r["variants"][" (eta 0)"]["b"]["held_out"] and r["variants"][" (eta 0)"]["b"]["reward_evals"] == 0
    json.dumps(r)


@pytest.mark.parametrize("argv, msg", [
    (["--methods", "nope", "--out", "X"], "unknown method"),
    (["--methods", "find"], "needs --out"),
    (["--methods", "find", "--out", "X", "--seeds", "a,b"], "comma-separated integers"),
    (["--methods", "find", "--out", "X", "--prompts", "a purple circle"], "purple"),
    (["--methods", "ddpo", "--out", "X", "--samples-per-prompt", "5", "--ddpo-workers", "2"], "divide evenly"),
    (["--methods", "amortized", "--out", "X", "--amortized-hidden", "-1"], "--amortized-hidden must be >= 0"),
    (["--methods", "ddpo", "--out", "X", "--ddpo-lr", "nan"], "--ddpo-lr must be a finite number > 0"),
    (["--methods", "find", "--out", "X", "--seeds", ","], "--seeds names no seed"),
    (["--methods", "find", "--out", "X", "--iterations", "0"], "--iterations must be >= 1"),
    (["--methods", "find", "--out", "X", "--checkpoint-every", "-1"], "--checkpoint-every must be >= 0"),
    (["--methods", "find", "--out", "X", "--checkpoint-samples", "1"], "--checkpoint-samples must be >= 2"),
    pytest.param(["--methods", "find", "--out", "X", "--device", "cuda"], "no CUDA GPU",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
])
def test_compare_cli_bad_input_is_one_line(argv, msg, tmp_path, capsys):
    from find_rl import evaluate

    argv = [str(tmp_path / a) if a == "X" else a for a in argv]
    assert evaluate.main(argv) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and msg in err[0]


@pytest.mark.slow
def test_compare_cli_end_to_end(tmp_path, capsys):
    """Every kind of method through the one command, tiny budgets: DDPO on two Ray Train workers, FIND and the
    amortised policy on RLlib, CEM, best-of-N and the paper loop in-process; the eta rows and the fresh-sample
    checkpoints; then a rerun reuses the finished runs."""
    from find_rl import evaluate
    from find_rl.diffusion.sampler import DiffusionSampler
    from find_rl.evaluation.scoring import evaluate_distributions

    out = tmp_path / "cmp"
    prompts = ["a green circle", "a red square"]
    argv = ["--methods", "base,best-of-2,cem,ddpo,find,find-paper,amortized", "--out", str(out), "--seeds", "0",
            "--iterations", "2", "--samples", "8", "--samples-per-prompt", "4", "--prompts", *prompts,
            "--checkpoint-every", "1", "--checkpoint-samples", "4"]
    assert evaluate.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert list(results) == ["base", "base (eta 1)", "best-of-2", "cem", "ddpo", "ddpo (eta 0)", "find", "find-paper", "amortized"]
    runs = {m: json.loads((out / "runs" / f"{m}_s0" / "method.json").read_text()) for m in ("find", "ddpo", "amortized")}
    for m, r in runs.items():
        assert [f["iteration"] for f in r["fresh"]] == [0, 1, 2], m
        assert [f["reward_evals_per_prompt"] for f in r["fresh"]] == [0, 4, 8]
        assert r["fresh"][0]["wall_s"] == 0 and r["fresh"][2]["wall_s"] == pytest.approx(r["history"][-1]["wall_s"])
    # iteration 0 of FIND is N(0, I) itself: the frozen model on the checkpoints' noise (seed 20000 + seed)
    at0 = evaluate_distributions(prompts=prompts, samples=4, seed=20_000, sampler=DiffusionSampler.from_pretrained("shapes"))
    assert runs["find"]["fresh"][0]["alignment_per_prompt"] == {p: at0[p]["alignment"] for p in prompts}
    # the base row is the frozen model on the scoring noise (seed 10000 + seed), exactly; its eta-1 twin is another sampler
    base = evaluate_distributions(prompts=prompts, samples=8, seed=10_000, sampler=DiffusionSampler.from_pretrained("shapes"))
    for p in prompts:
        for k in ("alignment", "strict_alignment", "diversity"):
            assert results["base"][p][k] == pytest.approx(base[p][k]), (p, k)
    assert any(results["base (eta 1)"][p]["diversity"] != results["base"][p]["diversity"] for p in prompts)
    for method, per in results.items():
        assert list(per) == ["a green circle", "a red square"]
        for r in per.values():
            assert {"alignment", "strict_alignment", "diversity", "reward_evals", "wall_s"} <= set(r)
            assert 0 <= r["alignment"] <= 1 and np.isfinite(r["diversity"]), method
    assert results["find"]["a red square"]["reward_evals"] == 2 * 4 and results["best-of-2"]["a red square"]["reward_evals"] == 2 * 8
    assert results["amortized"]["a green circle"]["held_out"] and not results["amortized"]["a red square"]["held_out"]
    report = (out / "report.md").read_text()
    assert "| ddpo |" in report and "| ddpo (eta 0) |" in report and "Criteria" in report and "held-out" in report
    assert "Fresh-sample alignment during training" in report and "basis fresh-sample checkpoints" in report
    for name in ("alignment_vs_evals.png", "alignment_vs_wall.png", "fresh_alignment_vs_wall.png", "frontier.png",
                 "grids/a_green_circle.png", "summary.json"):
        assert (out / name).is_file(), name
    capsys.readouterr()
    assert evaluate.main(argv) == 0  # everything finished is reused, not retrained
    assert capsys.readouterr().out.count("reusing") == 7


def test_aligned_diversity_kept_counts_a_failed_prompt_as_nothing_kept():
    from find_rl.compare.stats import aligned_kept, frontier

    ceiling = {"aligned_diversity": 10.0}
    assert aligned_kept({"aligned_diversity": 5.0, "aligned_count": 40}, ceiling) == 0.5
    assert aligned_kept({"aligned_diversity": None, "aligned_count": 1}, ceiling) == 0.0  # failed: not "diverse"
    assert aligned_kept({"aligned_diversity": 5.0, "aligned_count": 7}, ceiling) == 0.0  # below MIN_ALIGNED: 0, not 50%
    assert aligned_kept({"aligned_diversity": 5.0, "aligned_count": 40}, None) is None
    factor_ref = {"aligned_diversity": 10.0, "aligned_factor_diversity": 4.0}  # a world with factors (scenes)
    row = {"aligned_diversity": 5.0, "aligned_factor_diversity": 1.0, "aligned_count": 40}
    assert aligned_kept(row, factor_ref, key="aligned_factor_diversity") == 0.25
    assert aligned_kept(row, ceiling, key="aligned_factor_diversity") is None  # a reference without factors
    runs = {m: [_run({"a": a}, 1, 1) for _ in range(2)] for m, a in (("x", 0.9), ("y", 0.5), ("z", 0.4))}
    for m, kept in (("x", 2.0), ("y", 8.0), ("z", 1.0)):
        for r in runs[m]:
            r["per_prompt"]["a"] |= {"aligned_diversity": kept, "aligned_count": 10}
    results, summary = aggregate(runs, ["a"], {"a": {"aligned_diversity": 10.0}})
    assert results["y"]["a"]["aligned_kept"] == pytest.approx(0.8) and summary["x"]["aligned_kept"]["mean"] == pytest.approx(0.2)
    assert sorted(frontier(summary)) == ["x", "y"]  # z is below y on both


def test_a_row_rendered_with_another_sampler_gets_no_aligned_diversity_figure():
    """The reference is keyed on the sampler settings: an eta-1 row is not divided by an eta-0 reference."""
    eta0 = {"num_inference_steps": 10, "guidance_scale": 1.0, "eta": 0.0, "scheduler": "ddim"}
    runs = {m: [_run({"a": 0.9}, 1, 1) for _ in range(2)] for m in ("same", "other")}
    for m, eta in (("same", 0.0), ("other", 1.0)):
        for r in runs[m]:
            r["per_prompt"]["a"] |= {"aligned_diversity": 5.0, "aligned_count": 10, "sampler": eta0 | {"eta": eta}}
    results, summary = aggregate(runs, ["a"], {"a": {"aligned_diversity": 10.0}}, eta0)
    assert results["same"]["a"]["aligned_kept"] == pytest.approx(0.5) and "aligned_kept" in summary["same"]
    assert "aligned_kept" not in results["other"]["a"] and "aligned_kept" not in summary["other"]


def test_load_aligned_ceiling_is_keyed_on_the_sampler_settings():
    from find_rl.diffusion.sampler import SamplerSettings
    from find_rl.evaluation.scoring import load_aligned_ceiling

    shipped = load_aligned_ceiling("shapes")
    assert set(shipped) == {"a red circle", "a green circle", "a blue circle", "a red square", "a green square",
                            "a blue square", "a red triangle", "a green triangle", "a blue triangle"}
    assert load_aligned_ceiling("shapes", SamplerSettings(eta=1.0)) == {}
    assert load_aligned_ceiling("shapes", SamplerSettings(num_inference_steps=20)) == {}
    assert load_aligned_ceiling("shapes", SamplerSettings(device="cpu")) == shipped  # device does not change images


def test_aligned_diversity_interval_and_minimum_count():
    from find_rl.evaluation.diversity import MIN_ALIGNED, aligned_diversity, diversity, kept_text

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3, 4, 4))
    mean, lo, hi = aligned_diversity(x)
    assert mean == pytest.approx(diversity(x)) and lo < mean < hi and hi - lo < 0.2 * mean
    assert aligned_diversity(x[: MIN_ALIGNED - 1]) is None
    wide = aligned_diversity(x[:MIN_ALIGNED])
    assert wide[2] - wide[1] > hi - lo  # fewer images, a wider interval
    assert kept_text(0.0, 3) == "— (3 aligned)" and kept_text(0.42, 30) == "42%" and kept_text(None, 30) == "—"


def test_score_image_sets_reports_diversity_among_aligned_images_only():
    from find_rl.evaluation.scoring import score_image_sets
    from find_rl.worlds.shapes.world import COLOURS, SHAPES, render

    good = np.stack([render(SHAPES.index("circle"), COLOURS.index("green"), 8 + dx, 8 + dy, 4)
                     for dx in range(-2, 3) for dy in (-1, 1)])
    blank = np.full((3, *good.shape[1:]), -1.0, np.float32)
    res = score_image_sets({"a green circle": np.concatenate([good, blank])})["a green circle"]
    assert res["aligned_count"] == 10 and res["alignment"] == pytest.approx(10 / 13)
    assert res["aligned_diversity_ci"][0] < res["aligned_diversity"] < res["aligned_diversity_ci"][1]
    from find_rl.evaluation.scoring import diversity

    assert res["aligned_diversity"] == pytest.approx(diversity(good)) and res["diversity"] != res["aligned_diversity"]
    none = score_image_sets({"a green circle": blank})["a green circle"]
    assert none["aligned_count"] == 0 and none["aligned_diversity"] is None


def test_results_md_shows_the_factor_diversity_kept_only_where_the_reference_has_factors(tmp_path):
    from find_rl.evaluation.report import results_rows, write_results

    base = {p: {"alignment": 0.1, "strict_alignment": 0.1, "diversity": 10.0} for p in ("a", "b")}
    find = {"a": {"alignment": 0.9, "strict_alignment": 0.8, "diversity": 5.0, "samples": 64, "aligned_count": 60,
                  "aligned_diversity": 4.0, "aligned_factor_diversity": 3.0},
            "b": {"alignment": 0.05, "strict_alignment": 0.0, "diversity": 9.0, "samples": 64, "aligned_count": 3,
                  "aligned_diversity": None, "aligned_factor_diversity": None}}
    ref = {p: {"aligned_diversity": 8.0, "aligned_factor_diversity": 12.0} for p in ("a", "b")}
    rows = results_rows(base, find, ceiling=ref)
    assert [r["aligned_factor_kept"] for r in rows] == [0.25, 0.0]  # b failed: nothing kept
    md = write_results(rows, tmp_path)[1].read_text().splitlines()
    assert md[2].endswith("aligned factor diversity kept |") and md[4].endswith("| 50% (60) | 25% |")
    assert md[-1].endswith("| 25% (min 0%) | 12% (min 0%) |")
    plain = results_rows(base, find, ceiling={p: {"aligned_diversity": 8.0} for p in ("a", "b")})  # no factors: no column
    assert "factor" not in write_results(plain, tmp_path)[1].read_text()


def test_the_report_of_the_scenes_world_names_its_scorer_and_reference_and_adds_factor_diversity(tmp_path):
    """A comparison on scenes reads the world's own scorer and reference, and reports the factor diversity kept (the
    objects' positions and sizes) beside the pixel figure; a prompt with too few aligned images counts 0 on both."""
    from find_rl.compare.report import format_report
    from find_rl.compare.settings import CompareSettings

    ref = {"a": {"aligned_diversity": 10.0, "aligned_factor_diversity": 4.0},
           "b": {"aligned_diversity": 10.0, "aligned_factor_diversity": 2.0}}
    runs = {m: [_run({"a": 0.5, "b": 0.5}, 1, 1) for _ in range(2)] for m in ("base", "cem")}
    for r in runs["base"]:
        for p in ("a", "b"):
            r["per_prompt"][p] |= {"aligned_diversity": 10.0, "aligned_factor_diversity": ref[p]["aligned_factor_diversity"],
                                   "aligned_count": 40}
    for r in runs["cem"]:
        r["per_prompt"]["a"] |= {"aligned_diversity": 5.0, "aligned_factor_diversity": 1.0, "aligned_count": 40}
        r["per_prompt"]["b"] |= {"aligned_diversity": 5.0, "aligned_factor_diversity": 1.0, "aligned_count": 3}  # < MIN_ALIGNED
    results, summary = aggregate(runs, ["a", "b"], ref)
    assert results["cem"]["a"]["aligned_factor_kept"] == pytest.approx(0.25) and results["cem"]["b"]["aligned_factor_kept"] == 0.0
    assert summary["cem"]["aligned_factor_kept"]["mean"] == pytest.approx(0.125)
    assert summary["cem"]["aligned_factor_kept_min_prompt"] == 0.0 and summary["base"]["aligned_factor_kept"]["mean"] == 1.0
    _, shapes_summary = aggregate(runs, ["a", "b"], {p: {"aligned_diversity": 10.0} for p in ("a", "b")})
    assert "aligned_factor_kept" not in shapes_summary["cem"]  # a reference without factors: no factor figure

    report = format_report(CompareSettings(methods=["base", "cem"], out=tmp_path, world="scenes", prompts=["a", "b"],
                                           seeds=[0, 1]), results, summary, {})
    assert report.startswith("# FIND vs baselines on the scenes world")
    assert "the scenes world's exact scorer: GenEval's rules, template IoU >= 0.8, strict 0.9" in report
    assert "`find_rl/worlds/scenes/model/aligned_ceiling.json`" in report and "shapes" not in report
    header = next(line for line in report.splitlines() if line.startswith("| method | alignment"))
    assert "aligned factor diversity kept (worst prompt)" in header
    cem = next(line for line in report.splitlines() if line.startswith("| cem |"))
    assert cem.count("|") == header.count("|") and "12% ± " in cem and "(0%)" in cem
    shapes = format_report(CompareSettings(methods=["base", "cem"], out=tmp_path, prompts=["a", "b"], seeds=[0, 1]),
                           results, shapes_summary, {})
    assert "on the shapes world" in shapes and "the detector: IoU >= 0.7, strict 0.8" in shapes
    assert "factor" not in shapes


def test_a_cached_run_is_reused_only_under_the_sampler_it_was_rendered_with(tmp_path):
    # a scenes comparison cached before the world had its own sampler (DDIM 10) must run again, not be reused
    from find_rl.compare.cache import run_key, world_sampler_key
    from find_rl.compare.settings import CompareSettings

    scenes = CompareSettings(methods=["base"], out=tmp_path, world="scenes", prompts=["two cyan triangles"])
    shapes = CompareSettings(methods=["base"], out=tmp_path, prompts=["a green circle"])
    assert run_key(scenes, "base")["sampler"]["scheduler"] == "unipc"
    assert run_key(scenes, "base")["sampler"]["guidance_stop"] == 0.3
    assert "sampler" not in run_key(shapes, "base") and world_sampler_key("shapes") is None  # shapes caches stay valid
    old = {k: v for k, v in run_key(scenes, "base").items() if k != "sampler"}
    assert old != run_key(scenes, "base")
