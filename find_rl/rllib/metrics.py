"""The run's live figures as Ray metrics (``ray.util.metrics``), for Ray's Prometheus endpoint and the dashboard.

Ray exports them (prefixed ``ray_``) on every node's metrics port, from where Prometheus scrapes them and the
dashboard's Grafana panels plot them; ``python -m find_rl.train --dashboard`` starts a local dashboard bound to
127.0.0.1. Names (all tagged with ``run``; alignment also with ``prompt``, where ``"all"`` is the mean):

- ``find_rl_iteration``, ``find_rl_reward_mean``, ``find_rl_alignment``, ``find_rl_calibration_pred_mean``,
  ``find_rl_clip_fraction``, ``find_rl_approx_kl``, ``find_rl_images_per_s`` (gauges, set by the driver after each
  iteration from its progress row);
- ``find_rl_images_total`` (counter) and ``find_rl_reward_latency_s`` (histogram of one reward call over a batch),
  recorded where the images are rendered and scored (the env, in each env runner).
"""

from __future__ import annotations

import time

GAUGES = {
    "iteration": "training iterations completed",
    "reward_mean": "mean reward of the last training batch",
    "alignment": "training-batch alignment (detector) per prompt; prompt='all' is the mean",
    "calibration_pred_mean": "mean prediction of the reward calibrator g for the last batch",
    "clip_fraction": "fraction of samples whose PPO ratio was clipped in the last update",
    "approx_kl": "per-element approximate KL of the last update",
    "images_per_s": "rendered and scored images per second over the last iteration",
}


def _ray_ready() -> bool:
    try:
        import ray

        return ray.is_initialized()
    except ImportError:
        return False


class RunMetrics:
    """Driver-side gauges, set from each iteration's progress row (see ``find_rl.train.summarize``)."""

    def __init__(self, run: str):
        from ray.util.metrics import Gauge

        self.run = run
        self.gauges = {k: Gauge(f"find_rl_{k}", description=d, tag_keys=("run", "prompt") if k == "alignment" else ("run",))
                       for k, d in GAUGES.items()}

    def update(self, row: dict) -> None:
        tags = {"run": self.run}
        for k, g in self.gauges.items():
            if k == "alignment":
                g.set(float(row["alignment"]), tags=tags | {"prompt": "all"})
                for prompt, v in row.get("alignment_per_prompt", {}).items():
                    g.set(float(v), tags=tags | {"prompt": prompt})
            elif k in row:
                g.set(float(row[k]), tags=tags)


class RewardTimer:
    """Counts images and times reward calls where they happen; a no-op outside Ray (plain ``gym.make`` use)."""

    def __init__(self):
        self._metrics = None
        if _ray_ready():
            from ray.util.metrics import Counter, Histogram

            self._metrics = (Counter("find_rl_images", description="images rendered and scored"),
                             Histogram("find_rl_reward_latency_s", description="seconds per reward call (one batch)",
                                       boundaries=[0.001, 0.01, 0.05, 0.1, 0.5, 1, 5, 30]))

    def time(self, fn, n_images: int):
        t0 = time.perf_counter()
        out = fn()
        if self._metrics is not None:
            images, latency = self._metrics
            images.inc(n_images)
            latency.observe(time.perf_counter() - t0)
        return out
