"""Settings, declared once (find_rl.core.settings / find_rl.core.fields): every bad value is refused in one line naming its flag,
before Ray starts or a model loads; the CLI mirrors the declarations; saved settings round-trip and refuse unknown keys.
Fast: nothing here starts Ray."""

import argparse
import dataclasses
import math

import pytest

from find_rl.core import fields
from find_rl.core.settings import (PARTS, FindSettings, LoopSettings, PolicySettings, ResourceSettings, RunSettings, SamplerSettings,
                              TrackingSettings)

NAN, INF = math.nan, math.inf

# (part, field, a bad value, what the message must contain); every field with a check appears at least once
BAD = [
    (RunSettings, "world", "planet", "--world must be one of"),
    (SamplerSettings, "num_inference_steps", 0, "--num-inference-steps must be >= 1"),
    (SamplerSettings, "guidance_scale", NAN, "--guidance-scale must be a finite number"),
    (SamplerSettings, "eta", 2.0, "--eta must be in [0, 1]"),
    (SamplerSettings, "eta", NAN, "--eta must be in [0, 1]"),
    (SamplerSettings, "dtype", "float8", "--dtype must be one of"),
    (SamplerSettings, "scheduler", "pndm", "--scheduler must be one of"),
    (SamplerSettings, "guidance_rescale", 1.5, "--guidance-rescale must be in [0, 1]"),
    (SamplerSettings, "guidance_stop", -0.1, "--guidance-stop must be in [0, 1]"),
    (SamplerSettings, "num_frames", 0, "--num-frames must be >= 1"),
    (ResourceSettings, "num_env_runners", -1, "--num-env-runners must be >= 0"),
    (ResourceSettings, "num_gpus_per_env_runner", -1.0, "--num-gpus-per-env-runner must be a finite number >= 0"),
    (ResourceSettings, "num_gpus_per_env_runner", NAN, "--num-gpus-per-env-runner must be a finite number >= 0"),
    (ResourceSettings, "num_gpus_per_learner", -1.0, "num_gpus_per_learner must be a finite number >= 0"),
    (ResourceSettings, "num_reward_workers", -1, "--num-reward-workers must be >= 0"),
    (ResourceSettings, "num_gpus_per_reward_worker", INF, "--num-gpus-per-reward-worker must be a finite number >= 0"),
    (ResourceSettings, "threads", 0, "--threads must be >= 1"),
    (ResourceSettings, "dashboard_port", 99999, "--dashboard-port must be in [1, 65535]"),
    (PolicySettings, "policy_type", "gaussian", "--policy-type must be one of"),
    (PolicySettings, "mean_resolution", 0, "--mean-resolution must be >= 1"),
    (PolicySettings, "mean_highpass", 0, "--mean-highpass must be >= 1"),
    (PolicySettings, "mean_upsampling", "cubic", "--mean-upsampling must be one of"),
    (PolicySettings, "std_mode", "diag", "--std-mode must be one of"),
    (PolicySettings, "min_std", -1.0, "--min-std must be a finite number > 0"),
    (PolicySettings, "min_std", NAN, "--min-std must be a finite number > 0"),
    (PolicySettings, "amortized_hidden", -1, "--amortized-hidden must be >= 0"),
    (PolicySettings, "amortized_rank", -1, "--amortized-rank must be >= 0"),
    (PolicySettings, "flow_coupling", "nsf", "--flow-coupling must be one of"),
    (PolicySettings, "flow_blocks", -1, "--flow-blocks must be >= 0"),
    (PolicySettings, "flow_hidden", 0, "--flow-hidden must be >= 1"),
    (PolicySettings, "flow_conditioning", "text", "--flow-conditioning must be one of"),
    (PolicySettings, "flow_coupling_lr_scale", 0.0, "--flow-coupling-lr-scale must be a finite number > 0"),
    (PolicySettings, "mixture_components", 0, "--mixture-components must be >= 1"),
    (PolicySettings, "mixture_init", NAN, "--mixture-init must be a finite number >= 0"),
    (PolicySettings, "mixture_weight_floor", -0.1, "--mixture-weight-floor must be in"),
    (PolicySettings, "mixture_seed_share", 1.5, "--mixture-seed-share must be in [0, 1]"),
    (PolicySettings, "mixture_width", 0.0, "--mixture-width must be in (0, 1]"),
    (RunSettings, "recipe", "fast", "--recipe must be one of"),
    (FindSettings, "prior_kl_coeff", -1.0, "--kl-coeff must be a finite number >= 0"),
    (FindSettings, "replay_coeff", NAN, "--replay-coeff must be a finite number >= 0"),
    (FindSettings, "replay_size", 0, "--replay-size must be >= 1"),
    (FindSettings, "objective", "kl", "--objective must be one of"),
    (FindSettings, "beta", 0.0, "--beta must be a finite number > 0"),
    (FindSettings, "beta_final", NAN, "--beta-final must be a finite number > 0"),
    (FindSettings, "prior_share", 1.5, "--prior-share must be in [0, 1]"),
    (FindSettings, "render_replay", -1, "--render-replay must be >= 0"),
    (FindSettings, "lr", NAN, "--lr must be a finite number > 0"),
    (FindSettings, "lr", INF, "--lr must be a finite number > 0"),
    (FindSettings, "lr", 0.0, "--lr must be a finite number > 0"),
    (FindSettings, "clip_param", 0.0, "--clip-param must be > 0"),
    (FindSettings, "clip_param", NAN, "--clip-param must be > 0"),
    (FindSettings, "num_epochs", 0, "--num-epochs must be >= 1"),
    (FindSettings, "minibatches_per_epoch", 0, "--minibatches-per-epoch must be >= 1"),
    (FindSettings, "surrogate", "ppo2", "--surrogate must be one of"),
    (FindSettings, "anchor", "kl2", "--anchor must be one of"),
    (FindSettings, "anchor_coeff", NAN, "--anchor-coeff must be a finite number >= 0"),
    (FindSettings, "anchor_coeff", -0.1, "--anchor-coeff must be a finite number >= 0"),
    (FindSettings, "target_alignment", NAN, "--target-alignment must be in (0, 1]"),
    (FindSettings, "target_alignment", 0.0, "--target-alignment must be in (0, 1]"),
    (FindSettings, "anchor_factor", 1.0, "anchor_factor must be a finite number > 1"),
    (FindSettings, "baseline", "value", "--baseline must be one of"),
    (FindSettings, "ema_momentum", 1.0, "--ema-momentum must be in [0, 0.999]"),
    (FindSettings, "calibration_normalize", "std", "--calibration-normalize must be one of"),
    (FindSettings, "calibration_lr", NAN, "calibration_lr must be a finite number > 0"),
    (FindSettings, "calibration_steps", -1, "calibration_steps must be >= 0"),
    (FindSettings, "calibration_history", 0, "calibration_history must be >= 1"),
    (FindSettings, "calibration_hidden", 0, "calibration_hidden must be >= 1"),
    (LoopSettings, "iterations", 0, "--iterations must be >= 1"),
    (LoopSettings, "checkpoint_every", 0, "--checkpoint-every must be >= 1"),
    (LoopSettings, "max_invalid_fraction", 1.5, "--max-invalid-fraction must be in [0, 1]"),
    (LoopSettings, "max_invalid_fraction", NAN, "--max-invalid-fraction must be in [0, 1]"),
    (LoopSettings, "eval_samples", 1, "--eval-samples must be 0 (no final report) or >= 2"),
    (LoopSettings, "eval_samples", -1, "--eval-samples must be 0 (no final report) or >= 2"),
    (RunSettings, "samples_per_prompt", 1, "--samples-per-prompt must be >= 2"),
    (RunSettings, "prompts_per_iteration", 0, "--prompts-per-iteration must be >= 1"),
    (RunSettings, "train_prompts", 0, "--train-prompts must be >= 1"),
    (LoopSettings, "eval_set_samples", 1, "--eval-set-samples must be >= 2"),
    (PolicySettings, "text_features", "words", "--text-features must be one of"),
    (TrackingSettings, "image_every", -1, "--image-every must be >= 0"),
]


@pytest.mark.parametrize("cls, name, value, msg", BAD, ids=[f"{b[1]}={b[2]}" for b in BAD])
def test_every_bad_value_is_refused_in_one_line_naming_the_flag(cls, name, value, msg):
    with pytest.raises(ValueError) as e:
        cls(**{name: value})
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_every_checked_field_is_covered_above():
    covered = {(cls, name) for cls, name, _, _ in BAD}
    for cls in [*PARTS.values(), RunSettings]:
        for f in dataclasses.fields(cls):
            if f.metadata.get("check") is not None:
                assert (cls, f.name) in covered, f"{cls.__name__}.{f.name} has a check no test exercises"


@pytest.mark.parametrize("kw, msg", [
    (dict(prompts=["a", "a"]), "lists a prompt twice"),
    (dict(prompts=["a", " "]), "empty prompt"),
    (dict(prompts=["a"], eval_prompts=["a"], policy=PolicySettings(policy_type="amortized")), "must be held out"),
    (dict(eval_prompts=["b"]), "needs --policy-type amortized"),
    (dict(find=FindSettings(prior_kl_coeff=0.5)), "--kl-coeff is a setting of the flow policy; the per-prompt policy does not use it"),
    (dict(policy=PolicySettings(policy_type="flow"), find=FindSettings(anchor_coeff=0.01)),
     "--anchor-coeff is a setting of the per-prompt / amortized / mixture policy; the flow policy does not use it"),
    (dict(world="scenes", model="shapes"), "name the shapes world while --world is scenes"),
    (dict(reward=["shapes-strict"], world="scenes"), "name the shapes world while --world is scenes"),
    (dict(reward=["scenes-binary"]), "name the scenes world while --world is shapes"),
])
def test_cross_field_checks(kw, msg):
    with pytest.raises(ValueError, match=msg):
        RunSettings(**kw)


def test_the_sampler_left_open_is_the_worlds_and_what_is_given_stays():
    assert RunSettings().sampler == SamplerSettings(scheduler="ddim", num_inference_steps=10, guidance_scale=1.0,
                                                    guidance_rescale=0.0, guidance_stop=1.0)
    scenes = RunSettings(world="scenes").sampler
    assert (scenes.scheduler, scenes.num_inference_steps, scenes.guidance_scale, scenes.guidance_rescale,
            scenes.guidance_stop) == ("unipc", 15, 3.0, 0.7, 0.3)
    given = RunSettings(world="scenes", sampler=SamplerSettings(scheduler="ddim", num_inference_steps=10)).sampler
    assert (given.scheduler, given.num_inference_steps, given.guidance_scale) == ("ddim", 10, 3.0)
    # a run saved before guidance_rescale / guidance_stop existed guided every step, unrescaled
    old = RunSettings(world="scenes").to_dict()
    old["sampler"] = {k: v for k, v in old["sampler"].items() if k not in ("guidance_rescale", "guidance_stop")}
    back = RunSettings.from_dict(old).sampler
    assert (back.guidance_rescale, back.guidance_stop) == (0.0, 1.0)


def test_unipc_takes_no_eta():
    with pytest.raises(ValueError, match="--eta 0.5: UniPC is deterministic and takes no eta; use --scheduler ddim"):
        SamplerSettings(scheduler="unipc", eta=0.5)
    assert SamplerSettings(scheduler="unipc").eta == 0.0


def test_beta_final_needs_a_mass_covering_objective():
    with pytest.raises(ValueError, match="--beta-final anneals the mass-covering objectives' beta; add --objective"):
        FindSettings(beta_final=0.001)
    assert FindSettings(objective="log-variance", beta_final=0.001).beta_final == 0.001


@pytest.mark.parametrize("kw, msg", [
    (dict(minibatches_per_epoch=5), "must divide the batch"),
    (dict(mean_highpass=3), r"divides the latent's \(16, 16\)"),
    (dict(mean_resolution=32), r"--mean-resolution must be in \[1, 16\]"),
])
def test_checks_that_need_the_latent_shape(kw, msg):
    run = RunSettings(prompts=["a green circle"], latent_shape=(3, 16, 16)).replace(**kw)
    with pytest.raises(ValueError, match=msg):
        run.validate()


def test_the_world_supplies_the_default_model_and_reward():
    run = RunSettings()
    assert (run.world, run.model, run.reward) == ("shapes", "shapes", ["shapes"])
    run = RunSettings(world="scenes")  # the scenes world's recipe: the seeded mixture on the binary reward
    assert (run.model, run.reward, run.recipe) == ("scenes", ["scenes-binary"], "seeded")
    assert RunSettings(world="scenes", recipe="paper").reward == ["scenes"]
    assert RunSettings(world="scenes", reward=["clip=some/clip"]).reward == ["clip=some/clip"]


def test_the_recipe_fills_only_what_was_left_at_its_default():
    seeded = RunSettings(world="scenes").policy
    assert (seeded.policy_type, seeded.mean_resolution, seeded.mixture_components, seeded.mixture_seed_share) == (
        "mixture", None, 32, 0.25)
    assert RunSettings(world="scenes").replace(iterations=4, seed=1).policy == seeded  # idempotent
    assert RunSettings.from_dict(RunSettings(world="scenes").to_dict()) == RunSettings(world="scenes")
    assert RunSettings(recipe="seeded").reward == ["shapes-binary"]  # any world
    own = RunSettings(world="scenes", recipe="seeded", policy=PolicySettings(policy_type="mixture", mixture_components=16))
    assert (own.policy.mixture_components, own.policy.mixture_seed_share) == (16, 0.25)
    amortized = RunSettings(world="scenes", policy=PolicySettings(policy_type="amortized"))
    assert (amortized.recipe, amortized.policy.policy_type, amortized.reward) == ("paper", "amortized", ["scenes"])
    assert RunSettings(world="scenes", recipe="paper").policy == PolicySettings()
    with pytest.raises(ValueError, match="--recipe seeded trains a mixture; drop --policy-type flow or pass --recipe paper"):
        RunSettings(world="scenes", recipe="seeded", policy=PolicySettings(policy_type="flow"))


def test_a_family_named_on_the_command_line_takes_its_own_defaults_not_the_worlds_recipe():
    from find_rl import train

    parser = train.build_parser()
    args = parser.parse_args(["--world", "scenes", "--policy-type", "per-prompt"])
    run = train.settings_from_args(args)
    assert (run.recipe, run.policy.policy_type, run.reward) == ("paper", "per-prompt", ["scenes"])
    run = train.settings_from_args(parser.parse_args(["--world", "scenes"]))
    assert (run.recipe, run.policy.policy_type, run.reward) == ("seeded", "mixture", ["scenes-binary"])


def test_part_level_combinations():
    with pytest.raises(ValueError, match="--std-mode is a setting of the per-prompt policy; the amortized policy"):
        PolicySettings(policy_type="amortized", std_mode="element")
    with pytest.raises(ValueError, match="--mean-upsampling is a setting of the per-prompt policy"):
        PolicySettings(policy_type="flow", mean_upsampling="nearest")
    with pytest.raises(ValueError, match="--flow-blocks is a setting of the flow policy"):
        PolicySettings(flow_blocks=2)
    with pytest.raises(ValueError, match="needs --amortized-hidden > 0"):
        PolicySettings(policy_type="amortized", amortized_linear=False, amortized_hidden=0)
    with pytest.raises(ValueError, match="choose --anchor kl or l2"):
        FindSettings(target_alignment=0.9, anchor="none")


def _parser():
    from find_rl import train

    return train.build_parser()


def _settings(argv):
    args = _parser().parse_args(argv)
    parts = {name: fields.from_args(cls, args) for name, cls in PARTS.items()}
    return fields.from_args(RunSettings, args, **parts)


def test_no_flag_given_means_the_declared_defaults():
    assert _settings([]) == RunSettings()


def test_the_cli_is_generated_from_the_declarations():
    p = _parser()
    dests = {a.dest for a in p._actions}
    for cls in [*PARTS.values(), RunSettings]:
        for f in dataclasses.fields(cls):
            if fields.flag_of(f):
                assert f.name in dests, f.name
    for a in p._actions:  # one source of defaults: argparse's are all "not given"
        if a.dest in {f.name for cls in PARTS.values() for f in dataclasses.fields(cls)}:
            assert a.default is None, a.dest


def test_flags_reach_their_parts():
    run = _settings(["--lr", "0.1", "--clip-param", "inf", "--no-calibration", "--reward", "clip=x", "--reward", "shapes:0.5",
                     "--mean-resolution", "full", "--env-runner-resources", "sampler=1", "gpu_node=0.5", "--num-scorers", "2",
                     "--learn-std", "--seed", "3", "--num-frames", "4", "--prompts", "a", "b"])
    assert run.find.lr == 0.1 and run.find.clip_param == INF and run.find.clip is None and run.find.baseline == "none"
    assert run.reward == ["clip=x", "shapes:0.5"] and run.reward_spec == ["clip=x", "shapes:0.5"]
    assert run.policy.mean_resolution is None and run.policy.learn_std
    assert run.resources.env_runner_resources == {"sampler": 1.0, "gpu_node": 0.5} and run.resources.num_reward_workers == 2
    assert run.loop.seed == 3 and run.sampler.num_frames == 4 and run.prompts == ["a", "b"]
    assert _settings(["--baseline", "ema"]).find.baseline == "ema"


@pytest.mark.parametrize("argv, msg", [
    (["--clip-param", "wide"], "--clip-param must be a number or 'inf'"),
    (["--mean-resolution", "half"], "--mean-resolution must be a whole number or 'full'"),
    (["--env-runner-resources", "sampler"], "NAME=AMOUNT"),
    (["--env-runner-resources", "sampler=0"], "NAME=AMOUNT"),
])
def test_text_that_does_not_parse(argv, msg):
    with pytest.raises(ValueError, match=msg):
        _settings(argv)


def test_saved_settings_round_trip_and_refuse_unknown_keys():
    run = _settings(["--lr", "0.1", "--clip-param", "inf", "--prompts", "a", "b"]).replace(latent_shape=(3, 16, 16))
    d = run.to_dict()
    assert RunSettings.from_dict(d) == run
    with pytest.raises(ValueError, match="unknown key"):
        RunSettings.from_dict(d | {"learning_rate": 0.1})
    with pytest.raises(ValueError, match=r"\[find\] has unknown key\(s\) calibration"):
        RunSettings.from_dict(d | {"find": d["find"] | {"calibration": False}})
    with pytest.raises(ValueError, match="--lr must be a finite number"):
        RunSettings.from_dict(d | {"find": d["find"] | {"lr": NAN}})


def test_replace_routes_flat_names_to_their_parts():
    run = RunSettings().replace(clip_param=0.01, seed=4, threads=1, eta=0.5, policy_type="amortized", prompts=["x"])
    assert (run.find.clip_param, run.loop.seed, run.resources.threads, run.sampler.eta) == (0.01, 4, 1, 0.5)
    assert run.policy.policy_type == "amortized" and run.prompts == ["x"]
    assert RunSettings().find.clip_param == 0.005  # a copy: the original is unchanged
    with pytest.raises(ValueError, match="unknown setting 'learning_rate'"):
        RunSettings().replace(learning_rate=0.1)
    with pytest.raises(ValueError, match="--eta must be in"):
        RunSettings().replace(eta=3.0)


def test_setting_names_are_unique_across_parts():
    names = [f.name for cls in [*PARTS.values(), RunSettings] for f in dataclasses.fields(cls)]
    assert len(names) == len(set(names))


def test_env_config_and_derived_sizes():
    run = RunSettings(prompts=["a", "b", "c"], samples_per_prompt=4).replace(num_env_runners=2, threads=3)
    assert run.batch_size == 12 and run.runners == 2 and run.samples_per_prompt_per_iteration == 8
    cfg = run.env_config()
    assert cfg["torch_threads"] == 1 and cfg["sampler"] == SamplerSettings().resolved().to_dict() and cfg["reward"] == "shapes"


def test_help_lists_every_flag_with_its_default(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["--help"])
    out = capsys.readouterr().out
    assert "--lr LR" in out and "(default 0.1)" in out and "--no-calibration" in out and "(default inf)" not in out


def test_compare_settings_are_declared_the_same_way():
    from find_rl.compare.cli import build_parser, settings_from_args

    args = build_parser().parse_args(["--methods", "find,cem", "--out", "/tmp/x", "--seeds", "0,2"])
    cs = settings_from_args(args)
    assert cs.methods == ["find", "cem"] and cs.seeds == [0, 2] and cs.samples == 256
    with pytest.raises(ValueError, match="--samples must be >= 2"):
        settings_from_args(build_parser().parse_args(["--methods", "find", "--out", "/tmp/x", "--samples", "1"]))
    assert isinstance(build_parser(), argparse.ArgumentParser)


@pytest.mark.parametrize("argv, flag", [
    (["--kl-coeff", "0.01"], "--kl-coeff"),  # a flow setting at its default value, with the Gaussian family
    (["--policy-type", "flow", "--anchor-coeff", "0.01"], "--anchor-coeff"),
    (["--policy-type", "amortized", "--mean-upsampling", "bilinear"], "--mean-upsampling"),
])
def test_a_setting_of_another_family_ends_the_command_in_one_line_before_ray_starts(argv, flag, tmp_path, capsys):
    from find_rl import train

    assert train.main([*argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"error: {flag} is a setting of the") and f"drop {flag}" in err
    assert not (tmp_path / "run").exists()  # refused before anything was written (and before Ray)


def test_the_flows_kl_weight_is_named_apart_from_rllibs_kl_coeff_and_old_names_still_read():
    run = RunSettings().replace(policy_type="flow", kl_coeff=0.02)  # the old name, as method names spell it
    assert run.find.prior_kl_coeff == 0.02
    saved = run.to_dict()
    assert "kl_coeff" not in saved["find"]
    saved["find"]["kl_coeff"] = saved["find"].pop("prior_kl_coeff")  # a run.json written before the rename
    assert RunSettings.from_dict(saved).find.prior_kl_coeff == 0.02
