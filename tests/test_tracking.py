"""Watching a run: TensorBoard events in the run folder (scalars and image grids), the Tune sweep's trials side by side
with their clip values as hyperparameters, W&B (offline) and MLflow (a local file store) recording the same scalars,
all through Ray's own logger callbacks; nothing lands in ~/ray_results. Events are read back with TensorBoard's own
reader, W&B's records from its offline run file, MLflow's through its client."""

import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest

PROMPTS = ["a green circle", "a red square"]
#: what the issue asks a user to be able to watch (find_rl.core.keys; iteration_s is the iteration time)
WATCHED = ["alignment", "prompt_alignment/a_green_circle", "prompt_alignment/a_red_square", "reward_mean", "calibration_pred_mean",
           "calibrated_reward_mean", "advantage_mean", "advantage_std", "calibration_fit_mse", "clip_fraction", "approx_kl",
           "anchor", "iteration_s", "images_per_s"]
TB = "ray/tune/"  # TBXLoggerCallback's prefix


def _events(folder: Path) -> dict:
    """``{"scalars": {tag: [(step, value)]}, "images": {tag: [(step, width, height)]}, "hparams": {name: value}}`` from
    every TensorBoard event file directly in ``folder``, read with TensorBoard's own loader."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2
    from tensorboard.util import tensor_util

    out = {"scalars": {}, "images": {}, "hparams": {}}
    for f in sorted(folder.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(f)).Load():
            for v in event.summary.value:
                plugin = v.metadata.plugin_data.plugin_name
                if plugin == "hparams":
                    data = plugin_data_pb2.HParamsPluginData.FromString(v.metadata.plugin_data.content)
                    if data.HasField("session_start_info"):
                        for name, value in data.session_start_info.hparams.items():
                            out["hparams"][name] = value.number_value if value.HasField("number_value") else value.string_value
                elif plugin == "images" or v.HasField("image"):
                    if v.HasField("image"):
                        w, h = v.image.width, v.image.height
                    else:  # (the loader turns legacy image summaries into tensors: width, height, encoded image)
                        w, h = (int(x) for x in tensor_util.make_ndarray(v.tensor)[:2])
                    out["images"].setdefault(v.tag, []).append((event.step, w, h))
                elif v.HasField("simple_value") or plugin == "scalars":
                    value = v.simple_value if v.HasField("simple_value") else float(tensor_util.make_ndarray(v.tensor))
                    out["scalars"].setdefault(v.tag, []).append((event.step, value))
    return out


# ---------------------------------------------------------------------------------------------------- pure parts
def test_scalars_images_and_names():
    from find_rl.core.progress import FindProgress
    from find_rl.run.tracking import find_scalars, history_scalars, image_row, metric_name, to_uint8

    row = FindProgress(iteration=3, reward_mean=0.5, alignment=0.5, alignment_per_prompt={}, clip_fraction=0.1, approx_kl=0.01,
                       calibration_pred_mean=0.0, mu_abs_mean=0.0, std_mean=1.0, samples_invalid=0, samples=8, seconds=2.0,
                       images_per_s=4.0, reward_evals_per_prompt=12)
    s = find_scalars({"alignment": 0.5, "alignment/a cat, 4k": 1.0, "samples": 8, "note": "text"}, row)
    assert s == {"alignment": 0.5, "prompt_alignment/a_cat__4k": 1.0, "samples": 8.0, "iteration_s": 2.0, "images_per_s": 4.0,
                 "reward_evals_per_prompt": 12.0}
    assert metric_name("alignment/a dog (on grass)") == "prompt_alignment/a_dog__on_grass_"
    h = history_scalars({"iteration": 2, "alignment": 0.25, "alignment_per_prompt": {"a red square": 0.5}, "wall_s": 1.5})
    assert h == {"alignment": 0.25, "prompt_alignment/a_red_square": 0.5, "wall_s": 1.5}
    imgs = to_uint8(np.stack([np.full((3, 4, 5), -1.0), np.full((3, 4, 5), 1.0)]))
    grid = image_row(imgs, pad=2)
    assert grid.shape == (3, 4, 12) and grid.dtype == np.uint8
    assert (grid[:, :, :5] == 0).all() and (grid[:, :, 5:7] == 255).all() and (grid[:, :, 7:] == 255).all()
    with pytest.raises(ValueError, match="uint8"):
        image_row(np.zeros((1, 3, 4, 4), np.float32))


def test_run_log_writes_tensorboard_scalars_images_and_hparams(tmp_path):
    """RunLog drives Ray's TBXLoggerCallback for a run Tune does not drive: scalars, a 3-D uint8 array as an image,
    the run's hyperparameters at the end."""
    from find_rl.core.settings import TrackingSettings
    from find_rl.run.tracking import RunLog

    with RunLog(tmp_path, TrackingSettings(), config={"lr": 0.1}, hparams={"clip_param": 0.01, "seed": 0}) as log:
        for it in (1, 2):
            log.log(it, {"alignment": 0.1 * it}, {"a green circle": np.zeros((3, 8, 20), np.uint8)} if it == 2 else None)
    ev = _events(tmp_path)
    assert [s for s, _ in ev["scalars"][TB + "alignment"]] == [1, 2]
    assert ev["scalars"][TB + "alignment"][1][1] == pytest.approx(0.2)
    assert ev["images"][TB + "images/a_green_circle"] == [(2, 20, 8)]
    assert ev["hparams"] == {"clip_param": pytest.approx(0.01), "seed": 0}


def test_missing_optional_package_is_one_line_before_ray_starts(tmp_path, capsys, monkeypatch):
    import importlib.util

    import ray

    from find_rl import train

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("wandb", "mlflow") else real(name, *a))
    for flag in ("--wandb", "--mlflow"):
        assert train.main(["--out", str(tmp_path / "r"), "--iterations", "1", flag]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        name = flag[2:]
        assert len(err) == 1 and err[0] == (f"error: {flag} needs the {name} package, which is not installed: "
                                            f"pip install 'find_rl[{name}]'"), err
    assert not ray.is_initialized()


def test_wandb_without_credentials_is_one_line(tmp_path, capsys, monkeypatch):
    pytest.importorskip("wandb", reason="wandb is optional: pip install 'find_rl[wandb]'")
    from find_rl import train

    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    for var in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr("sys.stdin", open("/dev/null"))
    assert train.main(["--out", str(tmp_path / "r"), "--iterations", "1", "--wandb"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --wandb: ") and "WANDB_MODE=offline" in err[0], err


# ---------------------------------------------------------------------------------------------------- end to end
@pytest.fixture
def no_ray_results(tmp_path, monkeypatch):
    """Ray's default results folder (~/ray_results, where Trainable makes a logdir for an algorithm built outside
    Tune) moved to a temporary one, which must stay empty."""
    import ray.tune.trainable.trainable as trainable

    folder = tmp_path / "ray_results"
    monkeypatch.setattr(trainable, "DEFAULT_STORAGE_PATH", str(folder))
    yield folder
    assert not folder.exists() or not any(folder.iterdir()), sorted(p.name for p in folder.iterdir())


@pytest.mark.slow
def test_train_writes_tensorboard_events_into_out_and_nothing_elsewhere(tmp_path, monkeypatch, no_ray_results):
    from find_rl import train

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    out = tmp_path / "x"
    assert train.main(["--out", str(out), "--iterations", "3", "--prompts", *PROMPTS, "--samples-per-prompt", "4",
                       "--eval-samples", "0", "--image-every", "2"]) == 0
    assert not any(cwd.iterdir())
    ev = _events(out)
    for key in WATCHED:
        assert [s for s, _ in ev["scalars"][TB + key]] == [1, 2, 3], key
    rows = [json.loads(ln) for ln in (out / "progress.jsonl").read_text().splitlines()]
    assert [v for _, v in ev["scalars"][TB + "alignment"]] == pytest.approx([r["alignment"] for r in rows])
    assert [v for _, v in ev["scalars"][TB + "iteration_s"]] == pytest.approx([r["seconds"] for r in rows])
    for p in PROMPTS:  # every 2 iterations and at the end: 4 images of 16 x 16 (the shapes world) in a row
        assert ev["images"][TB + "images/" + p.replace(" ", "_")] == [(2, 4 * 16 + 3 * 2, 16), (3, 4 * 16 + 3 * 2, 16)], p
    assert ev["hparams"]["clip_param"] == pytest.approx(0.005) and ev["hparams"]["policy_type"] == "per-prompt"


def _wandb_history(run_dir: Path) -> list[dict]:
    """The rows a W&B offline run logged, read from its run file (LevelDB-log framed protobuf records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run_dir.glob("run-*.wandb")
    data, pos, block, buf, rows = path.read_bytes(), 7, 32768, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos: pos + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or (length == 0 and kind == 0):  # block trailer / padding
            pos += left
            continue
        buf += data[pos + 7: pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = pb.Record.FromString(buf)
            buf = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
    return rows


@pytest.mark.slow
def test_wandb_offline_and_mlflow_file_store_record_the_same_scalars(tmp_path, monkeypatch, no_ray_results):
    missing = [m for m in ("wandb", "mlflow") if __import__("importlib").util.find_spec(m) is None]
    if missing:
        pytest.skip(f"optional {' and '.join(missing)} not installed (pip install 'find_rl[{','.join(missing)}]')")
    from mlflow.tracking import MlflowClient

    from find_rl import train

    for var, value in {"WANDB_MODE": "offline", "WANDB_CONFIG_DIR": tmp_path / "wandb-config",
                       "WANDB_CACHE_DIR": tmp_path / "wandb-cache", "WANDB_DATA_DIR": tmp_path / "wandb-data"}.items():
        monkeypatch.setenv(var, str(value))
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    out = tmp_path / "x"
    assert train.main(["--out", str(out), "--iterations", "3", "--prompts", *PROMPTS, "--samples-per-prompt", "4",
                       "--eval-samples", "0", "--image-every", "0", "--wandb", "--mlflow", "--project", "test-find"]) == 0
    assert not any(cwd.iterdir())
    tb = {k[len(TB):]: [v for _, v in pts] for k, pts in _events(out)["scalars"].items()}
    assert set(WATCHED) <= set(tb)
    # W&B: one offline run under OUT/wandb, one history row per iteration with every scalar TensorBoard got
    (wb_run,) = (out / "wandb").glob("offline-run-*")
    rows = _wandb_history(wb_run)
    assert [r["training_iteration"] for r in rows] == [1, 2, 3]
    for key, values in tb.items():
        assert [r[key] for r in rows] == pytest.approx(values), key
    # MLflow: the file store in OUT/mlruns, experiment --project, one run with the same metrics, steps 1..3
    client = MlflowClient((out / "mlruns").resolve().as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("test-find").experiment_id])
    assert run.data.params["find/clip_param"] == "0.005"
    for key, values in tb.items():
        hist = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
        assert [m.step for m in hist] == [1, 2, 3] and [m.value for m in hist] == pytest.approx(values), key


@pytest.mark.slow
def test_tune_sweep_trials_show_side_by_side_with_their_clip_values(tmp_path, no_ray_results):
    from find_rl import tune

    out = tmp_path / "sweep"
    assert tune.main(["--out", str(out), "--clip-grid", "0.01", "0.2", "--prompts", "a green circle", "--iterations", "2",
                      "--samples-per-prompt", "4", "--eval-samples", "0", "--image-every", "1"]) == 0
    trials = sorted(p.parent for p in (out / "clip_sweep").glob("*/events.out.tfevents.*"))
    assert len(trials) == 2, sorted(p.name for p in (out / "clip_sweep").iterdir())
    clips = []
    for trial in trials:
        ev = _events(trial)
        clips.append(ev["hparams"]["clip_param"])
        assert ev["hparams"]["seed"] == 0
        for key in ("alignment", "prompt_alignment/a_green_circle", "clip_fraction", "approx_kl", "advantage_std", "iteration_s"):
            assert [s for s, _ in ev["scalars"][TB + key]][:2] == [1, 2], (trial.name, key)
            assert all(math.isfinite(v) for _, v in ev["scalars"][TB + key])
    assert sorted(clips) == pytest.approx([0.01, 0.2])
    for name in ("clip0.01_seed0", "clip0.2_seed0"):  # each trial's image grids, in its own run folder
        assert [s for s, _, _ in _events(out / "trials" / name)["images"][TB + "images/a_green_circle"]] == [1, 2]
