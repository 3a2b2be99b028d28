"""Reward scoring on its own Ray actors: a pool of named scorer actors, each owning one reward model.

The driver creates the pool (``ScorerPool.create``) before the env runners start; every env runner then finds the
same actors by name (``ScorerPool.connect``) and sends them batches through actor handles: the images go into the
object store once (``ray.put``) and the actor receives a reference, not a pickled copy. The actors are restarted by
Ray when they die (``max_restarts=-1``) and a call in flight on a dead actor is re-executed on the restarted one
(``max_task_retries=-1``), so a killed scorer costs time, never samples: each batch's scores come back exactly once.
The Dashboard's Actors view lists them as ``find_rl_scorer_<i>``.
"""

from __future__ import annotations

import itertools
import os

import ray

PREFIX = "find_rl_scorer"


@ray.remote(max_restarts=-1, max_task_retries=-1)
class RewardScorer:
    """One reward model on this actor's device share; ``score`` returns :func:`find_rl.rewards.registry.score_batch`'s dict."""

    def __init__(self, spec, device: str = "cpu", dtype: str = "float32", torch_threads: int | None = 1):
        import torch

        from find_rl.rewards.registry import make_reward

        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.reward = make_reward(spec, device=device, dtype=dtype)
        self.batches = 0

    def score(self, images, prompts: list[str]) -> dict:
        from find_rl.rewards.registry import score_batch

        self.batches += 1
        return score_batch(self.reward, images, prompts)

    def info(self) -> dict:
        return {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id(), "batches": self.batches}


class ScorerPool:
    """Round-robin over the named scorer actors; ``score(images, prompts)`` has the reward interface of the env."""

    def __init__(self, actors: list):
        if not actors:
            raise ValueError("a scorer pool needs at least one actor")
        self.actors = actors
        self._next = itertools.cycle(range(len(actors)))

    @classmethod
    def create(cls, spec, num_scorers: int, *, device: str = "cpu", dtype: str = "float32", num_gpus: float = 0.0,
               num_cpus: float = 1.0, resources: dict | None = None) -> "ScorerPool":
        """Start (or find) ``num_scorers`` actors named ``find_rl_scorer_<i>``, owned by the caller."""
        if num_scorers < 1:
            raise ValueError(f"num_scorers must be >= 1, got {num_scorers}")
        actors = [RewardScorer.options(name=f"{PREFIX}_{i}", get_if_exists=True, num_gpus=num_gpus, num_cpus=num_cpus,
                                       resources=resources or {}).remote(spec, device, dtype)
                  for i in range(num_scorers)]
        ray.get([a.info.remote() for a in actors])  # fail here, with the model's error, if a reward cannot load
        return cls(actors)

    @classmethod
    def connect(cls, num_scorers: int) -> "ScorerPool":
        try:
            return cls([ray.get_actor(f"{PREFIX}_{i}") for i in range(num_scorers)])
        except ValueError:
            raise ValueError(f"no scorer actors named {PREFIX}_0..{num_scorers - 1} in this Ray job; create them first "
                             "(find_rl.train does) or set num_scorers=0 to score in-process") from None

    def score(self, images, prompts: list[str]) -> dict:
        actor = self.actors[next(self._next)]
        return ray.get(actor.score.remote(ray.put(images), list(prompts)))

    def kill(self) -> None:
        for a in self.actors:
            ray.kill(a, no_restart=True)
