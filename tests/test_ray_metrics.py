"""The project's live figures reach Ray's Prometheus metrics endpoint during a real (short) training run."""

import re
import socket
import time
import urllib.request

import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def _value(text: str, name: str, **tags) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in tags.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_metrics_endpoint_serves_find_rl_metrics(tmp_path):
    import ray

    from find_rl import train

    port = _free_port()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, _metrics_export_port=port)
    try:
        rc = train.main(["--out", str(tmp_path / "mrun"), "--prompts", "a green circle", "a red square", "--iterations", "3",
                         "--samples-per-prompt", "4", "--eval-samples", "0"])
        assert rc == 0
        deadline, text = time.time() + 60, ""
        while time.time() < deadline:  # Ray's agent exports every few seconds
            text = _scrape(port)
            if _value(text, "ray_find_rl_iteration", run="mrun") == 3 and "ray_find_rl_reward_latency_s" in text:
                break  # (the agent may still hold an earlier export: wait for the last iteration's)
            time.sleep(2)
        assert _value(text, "ray_find_rl_iteration", run="mrun") == 3
        assert 0.0 <= _value(text, "ray_find_rl_alignment", run="mrun", prompt="all") <= 1.0
        assert 0.0 <= _value(text, "ray_find_rl_alignment", run="mrun", prompt="a red square") <= 1.0
        assert 0.0 <= _value(text, "ray_find_rl_reward_mean", run="mrun") <= 1.0
        assert 0.0 <= _value(text, "ray_find_rl_clip_fraction", run="mrun") <= 1.0
        assert _value(text, "ray_find_rl_images_per_s", run="mrun") > 0
        assert _value(text, "ray_find_rl_images_total") >= 3 * 8  # 3 iterations x 2 prompts x 4 samples
        counts = [float(m) for m in re.findall(r'^ray_find_rl_reward_latency_s_count\{[^}]*\} (\S+)', text, re.M)]
        assert counts and sum(counts) >= 3
    finally:
        ray.shutdown()
