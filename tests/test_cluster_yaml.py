"""cluster.yaml is a valid Ray autoscaler config (offline: Ray's own schema validation)."""

import copy
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).parent.parent / "cluster.yaml"


def _load():
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_cluster_yaml_passes_ray_validation():
    cfg = _load()
    validate_config(prepare_config(copy.deepcopy(cfg)))
    assert cfg["available_node_types"][cfg["head_node_type"]]["resources"]["GPU"] == 0
    assert any(t["resources"].get("GPU", 0) >= 1 for t in cfg["available_node_types"].values())
    start = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start  # safe by default


def test_validation_catches_fractional_resources():
    cfg = _load()
    cfg["available_node_types"]["ray.worker.gpu_a10g"]["resources"]["GPU"] = 0.5
    with pytest.raises(Exception):
        validate_config(prepare_config(cfg))
