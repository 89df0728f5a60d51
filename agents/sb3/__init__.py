"""Stable-Baselines3 interop: a ``VecEnv`` over the native vector env (policies come in a later issue)."""

from agents.sb3.vec_env import SB3VecEnv

__all__ = ["SB3VecEnv"]
