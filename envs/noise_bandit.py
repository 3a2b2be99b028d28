"""The one-step noise bandit: state = prompt, action = initial noise, reward = score of the finished image.

Spaces (documented contract):

- **observation**: ``Box(-inf, inf, (P + E,), float32)``: a one-hot of the prompt's index in the env's prompt
  list (first ``P`` entries) followed by the frozen text encoder's pooled embedding of the prompt (``E``
  entries: the shapes encoder's embedding, a CLIP text encoder's ``pooler_output``, or a T5 encoder's mean token
  state (``find_rl.core.observation.encode_text``); none for pipelines without
  a text encoder). Per-prompt policies read the one-hot;
  prompt-conditioned policies read the embedding.
- **action**: ``Box(-inf, inf, (D,), float32)``, the initial noise flattened (``D = prod(latent_shape)``, e.g.
  3x16x16 = 768 for the shapes model, 4x64x64 = 16384 for SD 1.5). It is unbounded on purpose: it is a sample
  of a Gaussian, not a normalised control; RLlib needs it 1-D, and it is reshaped to the latent here.
- **step**: renders through :class:`~find_rl.diffusion.sampler.DiffusionSampler`, scores through the reward, returns
  ``terminated=True``; ``info`` holds the prompt, the score and the detector's attribute results.

:class:`NoiseBanditVectorEnv` renders all ``num_envs`` sub-envs in one sampler call and uses gymnasium's
NEXT_STEP autoreset: after the rendering step, the next ``step`` only resets (new prompt, reward 0) and renders
nothing. Sub-env ``i`` is given prompt ``i % P`` (``prompt_assignment="round_robin"``, balanced per-prompt
groups) or a random prompt (``"random"``). With more prompts than ``prompts_per_iteration`` (K), every reset of the
whole batch draws K distinct prompts afresh and sub-env ``i`` gets the ``i % K``-th (balanced groups of the drawn
prompts): a prompt-conditioned policy sees a fresh subset of a large prompt list every iteration. The draw uses
numpy's global generator, which the run seeds per iteration and runner (an exactly resumable stream).

``text_features`` (``"pooled"`` or ``"tokens"``, :mod:`find_rl.core.observation`) picks the observation's text part.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from find_rl.rllib.metrics import RewardTimer
from find_rl.core.observation import prompt_features
from find_rl.rewards.registry import make_reward, score_batch
from find_rl.diffusion.sampler import DiffusionSampler, SamplerSettings
from find_rl.core.settings import check_prompts
from find_rl.worlds import get_world

#: per-image results the env copies into ``info`` when the reward gives them (a world's exact scorer gives most)
INFO_KEYS = ("score", "aligned", "strict", "shape_ok", "colour_ok", "valid")


class _Bandit:
    """What the single and the vector env share: sampler, reward, prompts and spaces."""

    def __init__(
        self,
        *,
        world: str = "shapes",
        model: str | None = None,
        prompts: list[str] | None = None,
        reward: str | list[str] | None = None,
        sampler: SamplerSettings | dict | None = None,
        num_reward_workers: int = 0,
        prompt_assignment: str = "round_robin",
        prompts_per_iteration: int | None = None,
        text_features: str = "pooled",
        torch_threads: int | None = None,
        seed: int = 0,
    ):
        if torch_threads:
            torch.set_num_threads(torch_threads)
        model, reward = model or world, reward or world  # the world's own model and exact scorer by default
        self.prompts = list(prompts) if prompts is not None else get_world(world).default_prompts()
        if not self.prompts:
            raise ValueError("prompts is empty; give the env at least one prompt")
        check_prompts(self.prompts, "prompts")
        if prompt_assignment not in ("round_robin", "random"):
            raise ValueError(f"prompt_assignment must be 'round_robin' or 'random', got {prompt_assignment!r}")
        self.prompt_assignment = prompt_assignment
        if prompts_per_iteration is not None and prompts_per_iteration < 1:
            raise ValueError(f"prompts_per_iteration must be >= 1, got {prompts_per_iteration}")
        self.prompts_per_iteration = min(prompts_per_iteration or len(self.prompts), len(self.prompts))
        settings = SamplerSettings(**sampler) if isinstance(sampler, dict) else (sampler or SamplerSettings())
        self.sampler = DiffusionSampler.from_pretrained(model, settings, seed=seed)
        if num_reward_workers > 0:  # score on the named scorer actors the driver created (find_rl.rewards.scorers)
            from find_rl.rewards.scorers import ScorerPool

            self.reward = ScorerPool.connect(num_reward_workers)
        elif isinstance(reward, (str, list)):
            self.reward = make_reward(reward, device=settings.device, dtype=settings.dtype)
        else:
            self.reward = reward
        self.features = prompt_features(self.sampler.pipeline, self.prompts, text_features)  # (P, P + E)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (self.features.shape[1],), np.float32)
        self.action_space = gym.spaces.Box(-np.inf, np.inf, (self.sampler.latent_dim,), np.float32)
        self.reward_timer = RewardTimer()  # Ray metrics (image count, reward latency) when running under Ray
        self._preview: DiffusionSampler | None = None

    def render_and_score(self, actions: np.ndarray, prompt_idx: np.ndarray) -> dict[str, np.ndarray]:
        prompts = [self.prompts[i] for i in prompt_idx]
        out = self.sampler.sample(np.asarray(actions, dtype=np.float32), prompts)
        scored = self.reward_timer.time(lambda: score_batch(self.reward, out.images, prompts), len(prompts))
        return scored | {"images": out.images}

    def render(self, actions: np.ndarray, prompt_idx: np.ndarray) -> np.ndarray:
        """Images of ``actions`` for the prompts at ``prompt_idx``, unscored, through a second sampler over the same
        pipeline (its own step-noise seed), so that the training stream is left as it was."""
        if self._preview is None:
            self._preview = DiffusionSampler(self.sampler.pipeline,
                                             dataclasses.replace(self.sampler.settings, compile_unet=False), seed=0)
        return self._preview.sample(np.asarray(actions, dtype=np.float32), [self.prompts[i] for i in prompt_idx]).images


class NoiseBanditEnv(gym.Env):
    """Single-env form (one image per step); see the module docstring for the spaces."""

    metadata = {"render_modes": []}

    def __init__(self, **kwargs: Any):
        self._b = _Bandit(**kwargs)
        self.observation_space, self.action_space = self._b.observation_space, self._b.action_space
        self.prompts = self._b.prompts
        self._idx = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if options and "prompt_index" in options:
            self._idx = int(options["prompt_index"])
        else:
            self._idx = int(self.np_random.integers(len(self.prompts)))
        return self._b.features[self._idx].copy(), {"prompt": self.prompts[self._idx], "prompt_index": self._idx}

    def step(self, action):
        out = self._b.render_and_score(np.asarray(action, np.float32)[None], np.array([self._idx]))
        info = {k: out[k][0].item() for k in INFO_KEYS if k in out}
        info |= {"prompt": self.prompts[self._idx], "prompt_index": self._idx}
        return self._b.features[self._idx].copy(), float(out["score"][0]), True, False, info


class NoiseBanditVectorEnv(VectorEnv):
    """Batched form: one sampler call renders every sub-env's image (NEXT_STEP autoreset)."""

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(self, num_envs: int = 1, **kwargs: Any):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self._b = _Bandit(**kwargs)
        self.num_envs = num_envs
        self.prompts = self._b.prompts
        self.single_observation_space, self.single_action_space = self._b.observation_space, self._b.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._idx = np.zeros(num_envs, dtype=np.int64)
        self._needs_reset = np.ones(num_envs, dtype=bool)
        self.images_rendered = 0

    def _assign(self, which: np.ndarray) -> None:
        k, n_prompts = self._b.prompts_per_iteration, len(self.prompts)
        if k < n_prompts and which.all():  # a fresh subset of the prompts for the whole batch
            drawn = np.random.choice(n_prompts, size=k, replace=False)
            self._idx[:] = drawn[np.arange(self.num_envs) % k]
        elif self._b.prompt_assignment == "round_robin":
            self._idx[which] = np.flatnonzero(which) % len(self.prompts)
        else:
            self._idx[which] = self.np_random.integers(len(self.prompts), size=int(which.sum()))

    def _infos(self, out: dict | None, active: np.ndarray) -> dict:
        infos = {"prompt_index": self._idx.copy(), "_prompt_index": np.ones(self.num_envs, bool)}
        if out is not None:
            for k in INFO_KEYS:
                if k in out:
                    full = np.zeros(self.num_envs, dtype=out[k].dtype)
                    full[active] = out[k]
                    infos[k], infos["_" + k] = full, active.copy()
        return infos

    def render_noise(self, actions: np.ndarray, prompt_idx: np.ndarray) -> np.ndarray:
        """Images ``(N, 3, H, W)`` in [-1, 1] of the noises ``actions`` ``(N, D)`` for the prompts at ``prompt_idx``,
        unscored and outside the episode (the run's TensorBoard image grids); the training stream is untouched."""
        return self._b.render(actions, prompt_idx)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        everyone = np.ones(self.num_envs, dtype=bool)
        self._assign(everyone)
        self._needs_reset[:] = False
        return self._b.features[self._idx].copy(), self._infos(None, everyone)

    def step(self, actions):
        actions = np.asarray(actions, dtype=np.float32)
        expect = (self.num_envs, self.single_action_space.shape[0])
        if actions.shape != expect:
            raise ValueError(f"actions have shape {actions.shape}; expected {expect} (num_envs x flattened latent)")
        resetting = self._needs_reset.copy()
        active = ~resetting
        rewards = np.zeros(self.num_envs, np.float32)
        out = None
        if resetting.any():
            self._assign(resetting)
        if active.any():
            out = self._b.render_and_score(actions[active], self._idx[active])
            rewards[active] = out["score"]
            self.images_rendered += int(active.sum())
        terminated = active.copy()
        self._needs_reset = terminated.copy()
        return (self._b.features[self._idx].copy(), rewards, terminated, np.zeros(self.num_envs, bool),
                self._infos(out, active))
