"""The one-step noise bandit: gymnasium's check_env, registration, the vector form's batching and autoreset."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import find_rl
from find_rl.envs.noise_bandit import NoiseBanditEnv, NoiseBanditVectorEnv

PROMPTS = ["a green circle", "a red square", "a blue triangle"]


def test_env_classes_live_in_the_find_rl_namespace():
    assert NoiseBanditEnv.__module__ == "find_rl.envs.noise_bandit"


def test_single_env_passes_check_env():
    env = NoiseBanditEnv(prompts=PROMPTS)
    check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=0, options={"prompt_index": 1})
    assert env.observation_space.shape == (3 + 64,) and obs[:3].tolist() == [0, 1, 0]
    assert env.action_space.shape == (768,) and np.isinf(env.action_space.high).all()
    obs2, r, term, trunc, info = env.step(env.action_space.sample())
    assert term and not trunc and 0.0 <= r <= 1.0
    assert info["prompt"] == "a red square" and set(info) >= {"aligned", "shape_ok", "colour_ok", "score", "valid"}


def test_registered_with_gymnasium_by_id():
    assert find_rl.ENV_ID in gym.registry
    env = gym.make(find_rl.ENV_ID, prompts=PROMPTS)
    assert env.action_space.shape == (768,)
    venv = gym.make_vec(find_rl.ENV_ID, num_envs=4, vectorization_mode="vector_entry_point", prompts=PROMPTS)
    assert isinstance(venv.unwrapped, NoiseBanditVectorEnv) and venv.num_envs == 4


def test_vector_env_renders_once_per_batch_and_skips_reset_steps():
    env = NoiseBanditVectorEnv(num_envs=6, prompts=PROMPTS)
    calls = []
    original = env._b.sampler.sample
    env._b.sampler.sample = lambda noise, prompts: calls.append(len(prompts)) or original(noise, prompts)
    obs, info = env.reset(seed=0)
    assert obs.shape == (6, 67)
    assert info["prompt_index"].tolist() == [0, 1, 2, 0, 1, 2]  # round robin: balanced per-prompt groups
    actions = np.random.default_rng(0).standard_normal((6, 768)).astype(np.float32)
    obs, r, term, trunc, info = env.step(actions)
    assert calls == [6] and term.all() and not trunc.any()
    assert info["_aligned"].all() and info["score"].shape == (6,)
    obs, r, term, trunc, info = env.step(actions)  # NEXT_STEP autoreset: a reset step renders nothing
    assert calls == [6] and not term.any() and (r == 0).all()
    assert "aligned" not in info
    env.step(actions)
    assert calls == [6, 6] and env.images_rendered == 12


def test_vector_env_random_assignment_and_bad_input():
    env = NoiseBanditVectorEnv(num_envs=8, prompts=PROMPTS, prompt_assignment="random")
    _, info = env.reset(seed=3)
    assert set(info["prompt_index"]) <= {0, 1, 2}
    with pytest.raises(ValueError, match="NaN or inf"):
        env.step(np.full((8, 768), np.nan, np.float32))
    with pytest.raises(ValueError, match="is empty"):
        NoiseBanditVectorEnv(num_envs=2, prompts=[])
    with pytest.raises(ValueError, match="unknown word"):
        NoiseBanditVectorEnv(num_envs=2, prompts=["a purple circle"])
