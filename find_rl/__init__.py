"""find_rl: FIND (Fine-tuning Initial Noise Distribution) on Ray RLlib.

Importing this package registers the one-step noise bandit with gymnasium as ``find_rl/NoiseBandit-v0``
(cheap: no model is loaded until the env is made).
"""

import gymnasium as _gym

__version__ = "0.1.0"

ENV_ID = "find_rl/NoiseBandit-v0"

if ENV_ID not in _gym.registry:
    _gym.register(
        id=ENV_ID,
        entry_point="find_rl.envs.noise_bandit:NoiseBanditEnv",
        vector_entry_point="find_rl.envs.noise_bandit:NoiseBanditVectorEnv",
        disable_env_checker=True,
    )

__all__ = ["ENV_ID", "__version__"]
