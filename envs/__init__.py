"""Gymnasium environments of find_rl, installed as ``find_rl.envs`` (this folder is mapped there by pyproject).

Importing ``find_rl`` registers ``find_rl/NoiseBandit-v0`` with gymnasium (single and vector entry points), so
``gymnasium.make``, ``gymnasium.make_vec`` and RLlib configs can name it without importing this module first.
"""

from find_rl import ENV_ID

__all__ = ["ENV_ID"]
