"""The noise policy RLModule alone (no Ray cluster): initialisation, parameterisations, output layout."""

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ray.rllib.core.columns import Columns

from find_rl.core.settings import PolicySettings
from find_rl.rllib.noise_module import NoisePolicyModule


def _module(latent_shape=(3, 16, 16), **settings):
    """The module as the run builds it: model_config from typed PolicySettings (per-prompt family)."""
    obs = gym.spaces.Box(-np.inf, np.inf, (3 + 64,), np.float32)
    act = gym.spaces.Box(-np.inf, np.inf, (768,), np.float32)
    policy = PolicySettings(**(dict(mean_resolution=4, learn_std=True, min_std=0.5) | settings))
    return NoisePolicyModule(observation_space=obs, action_space=act,
                             model_config=NoisePolicyModule.model_config_for(policy, num_prompts=3, latent_shape=latent_shape))


def test_starts_at_standard_normal_and_outputs_mean_then_log_std():
    m = _module()
    obs = torch.zeros(2, 67)
    obs[0, 2] = obs[1, 0] = 1.0
    out = m.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
    assert out.shape == (2, 2 * 768) and torch.count_nonzero(out) == 0
    assert m.layout.prompt_index(obs).tolist() == [2, 0]


def test_low_resolution_mean_is_upsampled_and_std_is_floored():
    m = _module()
    with torch.no_grad():
        m.mu[1] = torch.randn(3, 4, 4)
        m.log_std[1] = -3.0
    mu, log_std = m.distribution(torch.tensor([1]))
    assert mu.shape == (1, 768)
    assert torch.allclose(F.avg_pool2d(mu.reshape(1, 3, 16, 16), 4), F.avg_pool2d(
        F.interpolate(m.mu[1:2], size=(16, 16), mode="bilinear", align_corners=False), 4), atol=1e-6)
    assert torch.allclose(log_std, torch.full_like(log_std, np.log(0.5)))
    m.project()
    assert m.log_std[1].item() == pytest.approx(np.log(0.5))


def test_nearest_upsampling_moves_whole_blocks_like_the_flows_shift():
    m = _module(mean_upsampling="nearest")
    with torch.no_grad():
        m.mu[0] = torch.randn(3, 4, 4)
    mu = m.distribution(torch.tensor([0]))[0].reshape(3, 16, 16)
    assert torch.equal(mu, m.mu[0].detach().repeat_interleave(4, 1).repeat_interleave(4, 2))  # block-constant
    bilinear = _module()
    with torch.no_grad():
        bilinear.mu.copy_(m.mu)
    assert not torch.allclose(bilinear.distribution(torch.tensor([0]))[0], mu.reshape(1, -1))


def test_highpass_mean_has_zero_block_averages():
    m = _module(mean_resolution=None, mean_highpass=4)
    with torch.no_grad():
        m.mu.copy_(torch.randn_like(m.mu) + 3.0)
    mu, _ = m.distribution(torch.arange(3))
    blocks = F.avg_pool2d(mu.reshape(3, 3, 16, 16), 4)
    assert blocks.abs().max() < 1e-5 and mu.abs().mean() > 0.5


def test_element_std_and_bad_config():
    m = _module(std_mode="element", mean_resolution=None)
    assert m.log_std.shape == (3, 768) and m.mu.shape == (3, 3, 16, 16)
    with pytest.raises(ValueError, match="--std-mode"):
        _module(std_mode="diag")
    with pytest.raises(ValueError, match="latent_shape"):
        _module(latent_shape=[4, 8, 8])
