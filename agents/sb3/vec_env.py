"""Stable-Baselines3 ``VecEnv`` over the native :class:`lmrl_gym.TextGenVectorEnv`.

SB3 does not accept a ``gymnasium.vector.VectorEnv``: its ``VecEnv`` has ``reset() -> obs``,
``step() -> (obs, rewards, dones, infos)`` with a list of per-env info dicts, and autoreset that puts the
ended episode's last observation in ``infos[i]["terminal_observation"]``. This adapter translates, keeping
the batched stepping of the native env.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices

from lmrl_gym.vector_env import TextGenVectorEnv


class SB3VecEnv(VecEnv):
    """Wrap a :class:`TextGenVectorEnv` (``output="numpy"``) as an SB3 ``VecEnv``.

    Ended episodes carry ``infos[i]["episode"] = {"r": return, "l": length}`` (what SB3's ``Monitor``
    writes, so ``rollout/ep_rew_mean`` is logged), ``"terminal_observation"``, ``"TimeLimit.truncated"``
    and ``"length_limit"``. The env reports its ``max_new_tokens`` cut-off as terminated (a terminal state
    of the MDP), so ``TimeLimit.truncated`` is False there and SB3 does not bootstrap a value past it.
    ``env_method("action_masks")`` serves sb3-contrib's ``MaskablePPO``.
    """

    def __init__(self, venv: TextGenVectorEnv) -> None:
        if not isinstance(venv, TextGenVectorEnv):
            raise TypeError(f"SB3VecEnv wraps a TextGenVectorEnv, got {type(venv).__name__}")
        if venv.output != "numpy":
            raise ValueError("SB3VecEnv needs a TextGenVectorEnv built with output='numpy'")
        self.venv = venv
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self._actions: np.ndarray | None = None
        self._returns = np.zeros(self.num_envs, dtype=np.float64)
        self._lengths = np.zeros(self.num_envs, dtype=np.int64)

    def reset(self):
        seeds = None if all(s is None for s in self._seeds) else [int(s) for s in self._seeds]
        obs, _ = self.venv.reset(seed=seeds)
        self._reset_seeds()
        self._reset_options()
        self._returns[:] = 0.0
        self._lengths[:] = 0
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions).reshape(self.num_envs)

    def step_wait(self):
        obs, rewards, terminated, truncated, infos = self.venv.step(self._actions)
        self._returns += rewards
        self._lengths += 1
        dones = terminated | truncated
        # SB3's API is a list of one dict per env; only ended episodes get entries.
        sb3_infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for i in np.flatnonzero(dones):
            final_obs = infos["final_obs"][i]
            sb3_infos[i] = {
                "terminal_observation": final_obs,
                "TimeLimit.truncated": bool(truncated[i] and not terminated[i]),
                "length_limit": bool(infos["final_info"]["length_limit"][i]),
                "episode": {"r": float(self._returns[i]), "l": int(self._lengths[i])},
            }
            if "text" in infos["final_info"]:
                sb3_infos[i]["text"] = infos["final_info"]["text"][i]
        self._returns[dones] = 0.0
        self._lengths[dones] = 0
        return obs, rewards.astype(np.float32), dones, sb3_infos

    def close(self) -> None:
        self.venv.close()

    def _count(self, indices: VecEnvIndices) -> int:
        return len(self._get_indices(indices))

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self.venv, attr_name)] * self._count(indices)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        raise AttributeError("the envs of a TextGenVectorEnv share their attributes; set them on .venv")

    def env_method(
        self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs
    ) -> list[Any]:
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        chosen = list(self._get_indices(indices))
        if isinstance(result, np.ndarray) and result.shape[:1] == (self.num_envs,):
            return [result[i] for i in chosen]
        return [result] * len(chosen)

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return [False] * self._count(indices)

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None] * self.num_envs
