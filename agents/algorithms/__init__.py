"""Policy-gradient algorithms with Stable-Baselines3's surface."""

from agents.algorithms.a2c import A2C
from agents.algorithms.base import KLController, TextRLAlgorithm
from agents.algorithms.ppo import PPO
from agents.algorithms.reinforce import REINFORCE

ALGORITHMS = {"reinforce": REINFORCE, "a2c": A2C, "ppo": PPO}

__all__ = ["A2C", "ALGORITHMS", "KLController", "PPO", "REINFORCE", "TextRLAlgorithm"]
