"""FIND on RLlib with the real shapes model: learner pipeline, checkpoint round trip, ablations, the train CLI."""

import json
import math

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow

PROMPTS = ["a green circle", "a red square"]


def _run(**changes):
    """Resolved settings for a small run on PROMPTS; ``changes`` are flat setting names (RunSettings.replace)."""
    from find_rl.run.find_run import resolve
    from find_rl.core.settings import RunSettings

    return resolve(RunSettings(prompts=PROMPTS, samples_per_prompt=4).replace(**({"num_epochs": 2} | changes)))


def _config(**changes):
    from find_rl.rllib.config import find_ppo_config

    return find_ppo_config(_run(**changes))


def test_learner_pipeline_replaces_gae_with_calibration(ray_local):
    from ray.rllib.connectors.learner import GeneralAdvantageEstimation

    from find_rl.rllib.connectors import CalibrateRewards, FeedReplays, MaskInvalidRewards, TrackAlignment

    algo = _config().build_algo()
    try:
        learner = algo.learner_group._learner
        pieces = [type(p) for p in learner._learner_connector.connectors]
        assert GeneralAdvantageEstimation not in pieces
        # last, after NumpyToTensor, where GAE used to sit: one piece per job
        assert pieces[-4:] == [MaskInvalidRewards, CalibrateRewards, FeedReplays, TrackAlignment]
        module = algo.get_module()
        mu, log_std = module.distribution(torch.arange(2))
        assert torch.count_nonzero(mu) == 0 and torch.count_nonzero(log_std) == 0  # starts at exactly N(0, I)
        result = algo.train()
        f = result["learners"]["default_policy"]["find"]
        for k in ("clip_fraction", "approx_kl", "ratio_mean", "entropy_per_element", "mu_abs_mean", "std_mean",
                  "calibration_pred_mean", "reward_mean", "alignment", "alignment/a green circle"):
            assert k in f and math.isfinite(f[k]), k
        assert f["samples"] == 8 and f["samples_invalid"] == 0
        assert 0.9 < f["ratio_mean"] < 1.1
    finally:
        algo.stop()


def test_ppo_knobs_are_honoured_under_rllibs_names(ray_local):
    """clip_param set through RLlib's own config.training() after FIND's settings is the one the loss clips at."""
    algo = _config().training(clip_param=0.3).build_algo()
    try:
        learner = algo.learner_group._learner
        assert learner.state_for_objective.clip == 0.3 and algo.config.clip_param == 0.3
    finally:
        algo.stop()


def test_beta_schedule_reaches_the_loss_and_is_checkpointed(ray_local, tmp_path):
    """--beta-final: the learner's target temperature follows the geometric schedule over --iterations, the loss logs
    the one it used, and a restored algorithm continues from the checkpointed clock."""
    from ray.rllib.algorithms.algorithm import Algorithm

    from find_rl.objectives.mass_covering import annealed_beta

    algo = _config(objective="iw-mle", beta=0.1, beta_final=0.001, iterations=3).build_algo()
    try:
        learner = algo.learner_group._learner
        used = [algo.train()["learners"]["default_policy"]["find"]["beta"] for _ in range(2)]
        assert used == pytest.approx([0.1, 0.01])
        assert learner.state_for_objective.beta == pytest.approx(0.001)  # the third iteration's
        algo.save_to_path(str(tmp_path / "ckpt"))
    finally:
        algo.stop()
    restored = Algorithm.from_checkpoint(str(tmp_path / "ckpt"))
    try:
        assert restored.learner_group._learner.iterations_done == 2
        assert restored.train()["learners"]["default_policy"]["find"]["beta"] == pytest.approx(annealed_beta(0.1, 0.001, 2, 3))
    finally:
        restored.stop()


def test_checkpoint_round_trip_restores_policy_predictor_and_calibration(ray_local, tmp_path):
    from ray.rllib.algorithms.algorithm import Algorithm

    algo = _config(baseline="calibrated").build_algo()  # the paper's g, whose predictor and history are checkpointed
    try:
        for _ in range(2):
            algo.train()
        algo.save_to_path(str(tmp_path / "ckpt"))
        learner = algo.learner_group._learner
        before_module = {k: v.clone() for k, v in algo.get_module().state_dict().items()}
        before_cal = learner.calibrator.get_state()
    finally:
        algo.stop()
    restored = Algorithm.from_checkpoint(str(tmp_path / "ckpt"))
    try:
        assert restored.iteration == 2
        after_module = restored.get_module().state_dict()
        assert all(torch.equal(before_module[k], after_module[k]) for k in before_module)
        after_cal = restored.learner_group._learner.calibrator.get_state()
        assert all(torch.equal(before_cal["g"][k], after_cal["g"][k]) for k in before_cal["g"])
        assert len(before_cal["buffer"]) == len(after_cal["buffer"]) == 2
        assert all(torch.equal(a, b) for x, y in zip(before_cal["buffer"], after_cal["buffer"]) for a, b in zip(x, y))
        s0, s1 = before_cal["optimizer"]["state"], after_cal["optimizer"]["state"]
        assert s0.keys() == s1.keys() and all(torch.equal(s0[k]["exp_avg"], s1[k]["exp_avg"]) for k in s0)
        restored.train()  # and it trains on
    finally:
        restored.stop()


@pytest.mark.parametrize("kw", [dict(baseline="none"), dict(clip_param=math.inf), dict(surrogate="clamp"),
                                dict(anchor="l2", anchor_coeff=0.01), dict(target_alignment=0.5)])
def test_ablations_train(ray_local, kw):
    """Each ablation reaches the learner and changes what it does (the loss itself is checked by hand in test_losses)."""
    algo = _config(**kw).build_algo()
    try:
        learner = algo.learner_group._learner
        for name, value in kw.items():
            assert getattr(learner.find_settings, name) == value, name  # the setting reached the learner
        f = algo.train()["learners"]["default_policy"]["find"]
        assert math.isfinite(f["policy_loss"]) and f["mu_abs_mean"] > 0  # it trained, away from N(0, I)
        if kw.get("clip_param") == math.inf:  # no clip: the same batch moves the policy further than the default clip lets it
            assert learner.state_for_objective.clip is None and f["clip_fraction"] == 0.0
            clipped = _config().build_algo()
            try:
                g = clipped.train()["learners"]["default_policy"]["find"]
                moved_clipped = float(clipped.get_module().mu.abs().mean())
            finally:
                clipped.stop()
            # epoch 1 is identical (every ratio is 1); in epoch 2 the clip stops the samples outside its band
            assert g["clip_fraction"] > 0 and float(algo.get_module().mu.abs().mean()) > 1.05 * moved_clipped
        if kw.get("baseline") == "none":
            assert f["calibration_pred_mean"] == 0.0  # g is not used
        if kw.get("anchor") == "l2":
            mu = algo.get_module().distribution(torch.arange(2))[0]
            # sigma = 1: the anchor is the mean mu^2 of the policy before the last update, below the one after it
            assert 0 < f["anchor"] <= 1.01 * float((mu.detach() ** 2).mean())
        if "target_alignment" in kw:
            assert "anchor_coeff_mean" in f
            assert "adaptive_anchor" in learner.get_state()
            assert not torch.allclose(learner.adaptive_anchor.coeffs, torch.full((2,), 1e-3))  # it adapted
    finally:
        algo.stop()


def test_train_cli_end_to_end_and_resume(ray_local, tmp_path, capsys):
    from find_rl import train

    out = tmp_path / "run"
    args = ["--out", str(out), "--iterations", "2", "--prompts", *PROMPTS, "--samples-per-prompt", "4",
            "--eval-samples", "8", "--checkpoint-every", "1", "--seed", "3"]
    assert train.main(args) == 0
    printed = capsys.readouterr().out
    assert "iter   1/2" in printed and "iter   2/2" in printed and "clip" in printed and "img/s" in printed
    for name in ("noise_policy.safetensors", "noise_policy.json", "curve.png", "results.md", "results.csv",
                 "grid_a_green_circle.png", "grid_a_red_square.png", "progress.jsonl", "run.json"):
        assert (out / name).is_file(), name
    meta = json.loads((out / "noise_policy.json").read_text())
    assert meta["prompts"] == PROMPTS and meta["latent_shape"] == [3, 16, 16] and meta["sampler"]["eta"] == 0.0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["iter_000001", "iter_000002"]
    # an existing run is never overwritten
    assert train.main(args) == 2
    assert "--resume" in capsys.readouterr().err
    # resume up to 3 iterations in total
    assert train.main(["--resume", str(out), "--iterations", "3"]) == 0
    printed = capsys.readouterr().out
    assert "iter   3/3" in printed and "iter   1/3" not in printed
    rows = [json.loads(x) for x in (out / "progress.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2, 3]
    from find_rl.policies.export import load_policy

    pol = load_policy(out)
    assert np.isfinite(pol.mean.numpy()).all() and pol.mean.abs().sum() > 0
    # a corrupt checkpoint: one clear line, and nothing already written is touched
    (out / "checkpoints" / "iter_000003" / "learner_group" / "learner" / "state.pkl").write_bytes(b"not a pickle")
    before = {f.name: f.read_bytes() for f in out.iterdir() if f.is_file()}
    assert train.main(["--resume", str(out), "--iterations", "4"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "iter_000003 is corrupt" in err[0]
    assert {f.name: f.read_bytes() for f in out.iterdir() if f.is_file()} == before
    # a foreign checkpoint (another run's, with one prompt instead of two) copied in: the same one-line refusal
    import shutil

    other = tmp_path / "other"
    assert train.main(["--out", str(other), "--iterations", "1", "--prompts", "a blue square", "--samples-per-prompt", "4",
                       "--eval-samples", "0"]) == 0
    shutil.rmtree(out / "checkpoints" / "iter_000003")
    shutil.copytree(other / "checkpoints" / "iter_000001", out / "checkpoints" / "iter_000003")
    capsys.readouterr()
    assert train.main(["--resume", str(out), "--iterations", "4"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "written by another configuration" in err[0]


def test_unreachable_cluster_address_is_one_line(tmp_path, capsys):
    import socket

    from find_rl import train

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert train.main(["--out", str(tmp_path / "r"), "--iterations", "1", "--address", f"127.0.0.1:{port}"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "does not answer" in err[0]


@pytest.mark.parametrize(
    "argv, msg",
    [
        (["--prompts", "a purple circle"], "unknown word"),
        (["--clip-param", "0"], "clip-param must be > 0"),
        (["--clip-param", "-1"], "clip-param must be > 0"),
        (["--prompts-file", "/nonexistent/prompts.txt"], "does not exist"),
        (["--model", "/nonexistent/model"], "not found"),
        (["--reward", "nope"], "unknown reward"),
        (["--minibatches-per-epoch", "5"], "must divide"),
        (["--resume", "/nonexistent/run"], "no run.json"),
        (["--iterations", "0"], "iterations must be >= 1"),
        (["--reward", "clip"], "needs a model"),
        (["--env-runner-resources", "sampler"], "NAME=AMOUNT"),
        (["--num-reward-workers", "-1"], "--num-reward-workers must be >= 0"),
        (["--num-frames", "0"], "--num-frames must be >= 1"),
        (["--eval-prompts", "a green circle"], "needs --policy-type amortized"),
        (["--policy-type", "amortized", "--std-mode", "element"], "--std-mode is a setting of the per-prompt policy"),
        # non-finite and out-of-range numbers: each once hung or crashed the run inside Ray
        (["--clip-param", "nan"], "clip-param must be > 0"),
        (["--lr", "nan"], "lr must be a finite number > 0"),
        (["--lr", "inf"], "lr must be a finite number > 0"),
        (["--anchor-coeff", "nan"], "--anchor-coeff must be a finite number"),
        (["--target-alignment", "nan"], "--target-alignment must be in (0, 1]"),
        (["--guidance-scale", "nan"], "--guidance-scale must be a finite number"),
        (["--eta", "2"], "eta must be in [0, 1]"),
        (["--min-std", "-1"], "--min-std must be a finite number > 0"),
        (["--mean-highpass", "3"], "divides the latent's (16, 16)"),
        (["--num-env-runners", "-1"], "--num-env-runners must be >= 0"),
        (["--num-gpus-per-env-runner", "-1"], "--num-gpus-per-env-runner must be a finite number >= 0"),
        (["--num-inference-steps", "0"], "--num-inference-steps must be >= 1"),
        (["--threads", "0"], "--threads must be >= 1"),
        (["--eval-samples", "-1"], "--eval-samples must be 0 (no final report) or >= 2"),
        (["--eval-samples", "1"], "--eval-samples must be 0 (no final report) or >= 2"),
        (["--dashboard", "--dashboard-port", "99999"], "--dashboard-port must be in [1, 65535]"),
        (["--device", "cpux"], "is not a torch device"),
    ],
)
def test_train_cli_bad_input(tmp_path, capsys, argv, msg):
    from find_rl import train

    assert train.main(["--out", str(tmp_path / "r"), *argv]) == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and msg in errors[0]  # one line that says what to fix


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the answer of a machine without CUDA")
def test_train_cli_refuses_a_cuda_device_on_a_machine_without_one(tmp_path, capsys):
    from find_rl import train

    assert train.main(["--out", str(tmp_path / "r"), "--device", "cuda"]) == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "no CUDA GPU" in errors[0]
    assert not (tmp_path / "r").exists()  # refused before anything was written


@pytest.mark.parametrize("argv, msg", [
    (["--clip-grid", "nan"], "--clip-grid must be finite values > 0"),
    (["--clip-grid", "0.01", "inf"], "--clip-grid must be finite values > 0"),
    (["--stop-alignment", "nan"], "--stop-alignment must be > 0"),
    (["--max-concurrent", "0"], "--max-concurrent must be >= 1"),
    (["--lr", "nan"], "lr must be a finite number > 0"),
    (["--kl-grid", "0.1"], "add --policy-type flow"),
    (["--policy-type", "flow", "--kl-grid", "nan"], "--kl-grid must be finite values >= 0"),
    (["--beta-grid", "0.1"], "add --objective log-variance or iw-mle"),
    (["--prior-share-grid", "0.2"], "add --objective log-variance or iw-mle"),
    (["--objective", "iw-mle", "--beta-grid", "0"], "--beta-grid must be finite values > 0"),
    (["--objective", "iw-mle", "--prior-share-grid", "1.5"], "--prior-share-grid must be values in [0, 1]"),
    (["--objective", "iw-mle", "--clip-grid", "0.01", "0.2"], "has no clip: give --clip-grid one value"),
])
def test_tune_cli_bad_input(tmp_path, capsys, argv, msg):
    from find_rl import tune

    assert tune.main(["--out", str(tmp_path / "t"), *argv]) == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and msg in errors[0], errors
    assert not (tmp_path / "t").exists()  # refused before Ray or a folder


def test_train_cli_refuses_unwritable_out(tmp_path, capsys):
    import os

    from find_rl import train

    if os.geteuid() == 0:
        target = "/proc/find_rl_cannot_write_here"
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = str(locked / "run")
    assert train.main(["--out", target, "--iterations", "1"]) == 2
    assert "cannot write to output folder" in capsys.readouterr().err


def test_empty_prompts_file(tmp_path, capsys):
    from find_rl import train

    f = tmp_path / "p.txt"
    f.write_text("\n# nothing\n")
    assert train.main(["--out", str(tmp_path / "r"), "--prompts-file", str(f)]) == 2
    assert "holds no prompts" in capsys.readouterr().err


class _HalfNaNReward:
    """The detector's score, but NaN for every second image: those samples must be skipped and counted."""

    def __call__(self, images, prompts):
        from find_rl.rewards.registry import WorldReward

        s = WorldReward("shapes")(images, prompts).astype(float)
        s[::2] = float("nan")
        return s


def test_invalid_rewards_are_skipped_and_counted(ray_local, monkeypatch):
    from find_rl.rewards import registry as rewards

    monkeypatch.setitem(rewards.REWARDS, "half-nan", _HalfNaNReward)
    algo = _config(num_epochs=1, reward=["half-nan"]).build_algo()
    try:
        f = algo.train()["learners"]["default_policy"]["find"]
        assert f["samples_invalid"] == 4 and f["samples"] == 4
        assert math.isfinite(f["policy_loss"])
        assert all(torch.isfinite(p).all() for p in algo.get_module().parameters())
    finally:
        algo.stop()


def test_mostly_invalid_rewards_stop_the_run_after_a_checkpoint(ray_local, monkeypatch, tmp_path, capsys):
    from find_rl import train
    from find_rl.rewards import registry as rewards

    monkeypatch.setitem(rewards.REWARDS, "half-nan", _HalfNaNReward)
    out = tmp_path / "nan-run"
    argv = ["--out", str(out), "--reward", "half-nan", "--prompts", *PROMPTS, "--iterations", "3", "--samples-per-prompt", "4",
            "--eval-samples", "0"]
    assert train.main(argv) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "50% of iteration 1's rewards were NaN/inf" in err[0] and "--resume" in err[0]
    assert (out / "checkpoints" / "iter_000001").is_dir()  # nothing trained is lost
    assert len((out / "progress.jsonl").read_text().splitlines()) == 1
    # a higher limit lets the same run go on, skipping and counting the invalid samples
    assert train.main(["--out", str(tmp_path / "tolerant"), *argv[2:], "--max-invalid-fraction", "0.6"]) == 0


@pytest.mark.parametrize("backbone, rewards, extra, latent", [
    ("tiny_sd", ["clip", "pickscore:0.1"], [], (4, 8, 8)),
    ("tiny_sdxl", ["clip", "aesthetic:0.1"], [], (4, 8, 8)),
    ("tiny_t2v", ["xclip", "clip:0.5"], ["--num-frames", "4"], (4, 4, 8, 8)),
    ("tiny_animatediff", ["xclip"], ["--num-frames", "4"], (4, 4, 8, 8)),
])
def test_train_cli_on_real_pipeline_classes(backbone, rewards, extra, latent, tiny_clip, tiny_xclip, tiny_aesthetic, tmp_path,
                                           request):
    """A short FIND run through the CLI on each backbone class (tiny random weights saved to disk), with the
    CLIP / PickScore / aesthetic / X-CLIP rewards loaded from their folders; a weighted sum where two are given."""
    from find_rl import train
    from find_rl.policies.export import load_policy

    model = request.getfixturevalue(backbone)
    paths = {"clip": tiny_clip, "pickscore": tiny_clip, "xclip": tiny_xclip, "aesthetic": tiny_aesthetic}
    reward_args = []
    for spec in rewards:
        name, _, weight = spec.partition(":")
        reward_args += ["--reward", f"{name}={paths[name]}" + (f":{weight}" if weight else "")]
    out = tmp_path / "run"
    rc = train.main(["--out", str(out), "--model", model, *reward_args, "--prompts", "a dog", "a cat", "--iterations", "2",
                     "--samples-per-prompt", "4", "--num-inference-steps", "2", "--guidance-scale", "7.5",
                     "--mean-resolution", "2", *extra])
    assert rc == 0
    rows = [json.loads(ln) for ln in (out / "progress.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(math.isfinite(r["reward_mean"]) for r in rows)
    pol = load_policy(out)
    assert tuple(pol.mean.shape) == (2, *latent) and pol.model == model
    assert pol.mean.abs().sum() > 0 and torch.all(pol.std == 1)  # the mean moved; sigma fixed at 1 by default


def test_tune_sweep_resumes_after_interruption(tmp_path):
    """`python -m find_rl.tune` interrupted (SIGINT, as Ctrl-C) after its first checkpoint, then rerun: it restores
    the experiment (Tuner.restore) and continues the trials instead of starting over."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "find_rl.tune", "--out", str(out), "--clip-grid", "0.01", "0.2", "--prompts",
           "a green circle", "--iterations", "6", "--samples-per-prompt", "4", "--eval-samples", "8",
           "--checkpoint-every", "1", "--max-concurrent", "1", "--stop-alignment", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    trials = out / "trials"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:  # wait for the first trial's 2nd iteration
        rows = [ln for f in trials.glob("*/progress.jsonl") for ln in f.read_text().splitlines()] if trials.exists() else []
        if len(rows) >= 2:
            break
        time.sleep(0.5)
    assert proc.poll() is None, "the sweep finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    first_out, _ = proc.communicate(timeout=120)
    interrupted = {f.parent.name: len(f.read_text().splitlines()) for f in trials.glob("*/progress.jsonl")}
    assert not (out / "results.json").exists() or json.loads((out / "results.json").read_text())["trials"][0]["done"] is False
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert "resuming the sweep" in second.stdout
    res = json.loads((out / "results.json").read_text())
    assert [t["clip_param"] for t in res["trials"]] == [0.01, 0.2] and all(t["done"] for t in res["trials"])
    for name, n_before in interrupted.items():  # progress continued from the checkpoint: iterations 1..6 once each
        its = [json.loads(ln)["iteration"] for ln in (trials / name / "progress.jsonl").read_text().splitlines()]
        assert its == list(range(1, 7)), (name, n_before, its)
    first = res["trials"][0]  # the trial that was running when interrupted continued from its checkpoint
    assert first["started_at_iteration"] >= 1, first
    assert (out / "best" / "noise_policy.safetensors").is_file()
    assert "| 0.01 | 0 | 6 |" in (out / "results.md").read_text()


def test_resumed_run_matches_an_uninterrupted_one_bit_for_bit(ray_local, tmp_path):
    """Interrupted after iteration 2 and resumed to 4 = run to 4 in one go: policy, reward predictor, calibration
    history, optimizer state and the noise streams all restored (CPU, same thread count)."""
    from find_rl import train
    from find_rl.policies.export import load_policy

    common = ["--prompts", *PROMPTS, "--samples-per-prompt", "4", "--eval-samples", "0", "--checkpoint-every", "2",
              "--seed", "5", "--num-epochs", "2"]
    assert train.main(["--out", str(tmp_path / "whole"), "--iterations", "4", *common]) == 0
    assert train.main(["--out", str(tmp_path / "split"), "--iterations", "2", *common]) == 0
    assert train.main(["--resume", str(tmp_path / "split"), "--iterations", "4"]) == 0
    whole, split = load_policy(tmp_path / "whole"), load_policy(tmp_path / "split")
    assert torch.equal(whole.mean, split.mean) and torch.equal(whole.std, split.std)
    rows = {name: [json.loads(ln) for ln in (tmp_path / name / "progress.jsonl").read_text().splitlines()]
            for name in ("whole", "split")}
    for key in ("reward_mean", "alignment", "approx_kl", "calibration_pred_mean"):
        assert [r[key] for r in rows["whole"]] == [r[key] for r in rows["split"]], key


def test_amortized_policy_trains_and_answers_held_out_prompts(ray_local, tmp_path):
    """The prompt-conditioned RLModule through the CLI: trained on two prompts, exported (and scored) for a third it
    never saw, from that prompt's text embedding."""
    from find_rl import train
    from find_rl.policies.export import load_policy

    out = tmp_path / "amortized"
    assert train.main(["--out", str(out), "--policy-type", "amortized", "--prompts", *PROMPTS, "--eval-prompts", "a blue square",
                       "--iterations", "2", "--samples-per-prompt", "4", "--eval-samples", "8"]) == 0
    pol = load_policy(out)
    assert pol.prompts == [*PROMPTS, "a blue square"] and tuple(pol.mean.shape) == (3, 3, 16, 16)
    assert all(pol.mean[i].abs().sum() > 0 for i in range(3))  # the held-out prompt gets its own mean, not zeros
    assert not torch.allclose(pol.mean[0], pol.mean[2])
    assert "a blue square *(held out)*" in (out / "results.md").read_text()


def test_amortized_policy_on_a_clip_text_encoder(tiny_sd, tiny_clip, ray_local, tmp_path):
    """SD-style pipelines give the amortised policy CLIP's pooled text embedding (a 4 x 8 x 8 latent, 2 x 2 mean)."""
    from find_rl import train
    from find_rl.core.observation import prompt_features
    from find_rl.policies.export import load_policy
    from find_rl.diffusion.models import load_pipeline

    feats = prompt_features(load_pipeline(tiny_sd), ["a dog", "a cat"])
    assert feats.shape[1] > 2 and not np.allclose(feats[0, 2:], feats[1, 2:])  # one-hot + pooled embedding
    out = tmp_path / "sd"
    assert train.main(["--out", str(out), "--model", tiny_sd, "--reward", f"clip={tiny_clip}", "--policy-type", "amortized",
                       "--prompts", "a dog", "a cat", "--eval-prompts", "a bird", "--iterations", "2", "--samples-per-prompt", "4",
                       "--num-inference-steps", "2", "--mean-resolution", "2"]) == 0
    pol = load_policy(out)
    assert pol.prompts == ["a dog", "a cat", "a bird"] and tuple(pol.mean.shape) == (3, 4, 8, 8)


def test_flow_policy_trains_exports_generates_and_evaluates_without_ray(ray_local, tmp_path):
    """The flow family through the CLI: train, export (family "flow"), then generate and evaluate from the export."""
    from find_rl import evaluate, generate, train
    from find_rl.policies.export import FlowPolicy, load_policy

    out = tmp_path / "flow"
    assert train.main(["--out", str(out), "--policy-type", "flow", "--prompts", *PROMPTS, "--iterations", "2",
                       "--samples-per-prompt", "4", "--eval-samples", "8", "--flow-coupling", "spline"]) == 0
    meta = json.loads((out / "noise_policy.json").read_text())
    assert meta["family"] == "flow" and meta["flow"]["coupling"] == "spline" and meta["training"]["policy_type"] == "flow"
    pol = load_policy(out)
    assert isinstance(pol, FlowPolicy) and pol.prompts == PROMPTS and pol.latent_shape == (3, 16, 16)
    z = pol.sample("a red square", 5, generator=torch.Generator().manual_seed(0))
    assert z.shape == (5, 3, 16, 16) and torch.isfinite(z).all()
    assert generate.main(["--policy", str(out), "--prompt", "a red square", "--num-images", "3", "--out", str(tmp_path / "g")]) == 0
    assert len(list((tmp_path / "g").glob("0*.png"))) == 3
    assert evaluate.main(["--policy", str(out), "--samples", "8", "--json", str(tmp_path / "e.json")]) == 0
    res = json.loads((tmp_path / "e.json").read_text())["prompts"]
    assert set(res) == set(PROMPTS) and all("aligned_diversity" in r and "aligned_count" in r for r in res.values())


def test_flow_resumed_run_matches_an_uninterrupted_one(ray_local, tmp_path):
    """Exact resume for the flow: its couplings, per-group optimizers and the noise streams."""
    from find_rl import train
    from find_rl.policies.export import load_policy

    common = ["--policy-type", "flow", "--prompts", *PROMPTS, "--samples-per-prompt", "4", "--eval-samples", "0",
              "--checkpoint-every", "2", "--seed", "3", "--num-epochs", "2"]
    assert train.main(["--out", str(tmp_path / "whole"), "--iterations", "4", *common]) == 0
    assert train.main(["--out", str(tmp_path / "split"), "--iterations", "2", *common]) == 0
    assert train.main(["--resume", str(tmp_path / "split"), "--iterations", "4"]) == 0
    whole, split = load_policy(tmp_path / "whole"), load_policy(tmp_path / "split")
    ws, ss = whole.flow.state_dict(), split.flow.state_dict()
    assert all(torch.equal(ws[k], ss[k]) for k in ws) and any(ws[k].abs().sum() > 0 for k in ws if "shift" in k)
    rows = {name: [json.loads(ln) for ln in (tmp_path / name / "progress.jsonl").read_text().splitlines()]
            for name in ("whole", "split")}
    assert [r["reward_mean"] for r in rows["whole"]] == [r["reward_mean"] for r in rows["split"]]


@pytest.mark.parametrize("family, objective", [("flow", "log-variance"), ("per-prompt", "iw-mle")])
def test_mass_covering_resumed_run_matches_an_uninterrupted_one(ray_local, tmp_path, family, objective):
    """Exact resume for the mass-covering objectives: the behaviour mixture's prior draws, the replayed renders and the
    policy all restored; the export then generates and evaluates without Ray."""
    from find_rl import evaluate, generate, train
    from find_rl.policies.export import load_policy

    common = ["--policy-type", family, "--objective", objective, "--render-replay", "8", "--prior-share", "0.3",
              "--beta", "0.01", "--prompts", *PROMPTS, "--samples-per-prompt", "4", "--eval-samples", "0",
              "--checkpoint-every", "2", "--seed", "4", "--num-epochs", "2"]
    assert train.main(["--out", str(tmp_path / "whole"), "--iterations", "4", *common]) == 0
    assert train.main(["--out", str(tmp_path / "split"), "--iterations", "2", *common]) == 0
    assert train.main(["--resume", str(tmp_path / "split"), "--iterations", "4"]) == 0
    rows = {name: [json.loads(ln) for ln in (tmp_path / name / "progress.jsonl").read_text().splitlines()]
            for name in ("whole", "split")}
    for key in ("reward_mean", "alignment", "ess"):  # the renders replayed at iterations 3-4 come from the checkpoint
        assert [r[key] for r in rows["whole"]] == [r[key] for r in rows["split"]], key
    whole, split = load_policy(tmp_path / "whole"), load_policy(tmp_path / "split")
    if family == "flow":
        ws, ss = whole.flow.state_dict(), split.flow.state_dict()
        assert all(torch.equal(ws[k], ss[k]) for k in ws)
    else:
        assert torch.equal(whole.mean, split.mean) and torch.equal(whole.std, split.std)
        assert whole.mean.abs().sum() > 0  # the weighted regression moved the mean
    out = tmp_path / "whole"
    assert generate.main(["--policy", str(out), "--prompt", PROMPTS[0], "--num-images", "2", "--out", str(tmp_path / "g")]) == 0
    assert len(list((tmp_path / "g").glob("0*.png"))) == 2
    assert evaluate.main(["--policy", str(out), "--samples", "4", "--json", str(tmp_path / "e.json")]) == 0
    assert set(json.loads((tmp_path / "e.json").read_text())["prompts"]) == set(PROMPTS)


def test_flow_on_sd_shaped_latents(tiny_sd, tiny_clip, ray_local, tmp_path):
    """The flow on a CLIP-conditioned SD pipeline (4 x 8 x 8 latent, the flow on its 4 x 2 x 2 block means), conditioned
    on the text embedding, so it also answers a held-out prompt."""
    from find_rl import train
    from find_rl.policies.export import load_policy

    out = tmp_path / "sdflow"
    assert train.main(["--out", str(out), "--model", tiny_sd, "--reward", f"clip={tiny_clip}", "--policy-type", "flow",
                       "--flow-conditioning", "embedding", "--prompts", "a dog", "a cat", "--eval-prompts", "a bird",
                       "--iterations", "1", "--samples-per-prompt", "4", "--num-inference-steps", "2",
                       "--mean-resolution", "2"]) == 0
    pol = load_policy(out)
    assert pol.prompts == ["a dog", "a cat", "a bird"] and pol.latent_shape == (4, 8, 8) and pol.cond.shape[0] == 3


def test_tune_space_and_table_carry_the_mass_covering_axes():
    """--beta-grid and --prior-share-grid become grid axes of the Tune space, and the table prints a column for each
    (with the aligned diversity kept) only when a trial has it."""
    from types import SimpleNamespace

    from find_rl.tune import format_table
    from tuning.spaces import clip_sweep

    space = clip_sweep([0.01], [0, 1], beta_grid=[0.003, 0.001], prior_share_grid=[0.1, 0.3])
    assert space["beta"] == {"grid_search": [0.003, 0.001]} and space["prior_share"] == {"grid_search": [0.1, 0.3]}
    assert "kl_coeff" not in space and "beta" not in clip_sweep([0.01])
    run = SimpleNamespace(find=SimpleNamespace(lr=0.1), loop=SimpleNamespace(iterations=4, eval_samples=8), samples_per_prompt=4)
    row = {"clip_param": 0.01, "seed": 0, "done": True, "iterations": 4, "base_alignment": 0.1, "final_alignment": 0.5,
           "final_strict": 0.4, "final_diversity_kept": 0.9, "final_aligned_kept": 0.45, "clip_fraction_mean": 0.0,
           "approx_kl_max": 0.001, "wall_s": 10.0, "error": None, "kl_coeff": None}
    table = format_table([row | {"beta": 0.003, "prior_share": 0.1}, row | {"beta": 0.001, "prior_share": 0.3}], run).splitlines()
    assert table[2].startswith("| beta | prior share | clip_param |") and "aligned diversity kept" in table[2]
    assert table[4].startswith("| 0.003 | 0.1 | 0.01 | 0 |") and "| 45% |" in table[4]
    assert len({ln.count("|") for ln in table[2:]}) == 1  # header, rule and rows have the same columns
    plain = format_table([row | {"beta": None, "prior_share": None}], run).splitlines()
    assert plain[2].startswith("| clip_param |")
