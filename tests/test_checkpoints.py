"""Atomic checkpoint writes: a crash while writing leaves the previous checkpoint the latest usable one."""

import json

import pytest

from find_rl.core.checkpoints import latest_checkpoint, list_checkpoints, save_checkpoint


class _Writer:
    """Writes an RLlib-like checkpoint folder; ``crash_after`` files, it dies like a killed process would."""

    def __init__(self, crash_after=None):
        self.crash_after = crash_after

    def save_to_path(self, path):
        from pathlib import Path

        p = Path(path)
        p.mkdir(parents=True)
        for i, name in enumerate(("algorithm_state.pkl", "learner_state.pkl", "rllib_checkpoint.json")):
            if self.crash_after is not None and i >= self.crash_after:
                raise KeyboardInterrupt("killed while writing")
            (p / name).write_text(json.dumps({"file": name}))


def test_crash_while_writing_keeps_the_previous_checkpoint(tmp_path):
    save_checkpoint(_Writer(), tmp_path, 10)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(_Writer(crash_after=2), tmp_path, 20)  # dies before rllib_checkpoint.json
    assert latest_checkpoint(tmp_path).name == "iter_000010"
    assert [p.name for p in list_checkpoints(tmp_path)] == ["iter_000010"]  # the partial one is never offered
    save_checkpoint(_Writer(), tmp_path, 20)  # the next save replaces the leftover temporary folder
    assert latest_checkpoint(tmp_path).name == "iter_000020"


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    for it in (1, 2, 3, 4):
        save_checkpoint(_Writer(), tmp_path, it, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["iter_000003", "iter_000004"]
