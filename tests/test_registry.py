import subprocess
import sys
import warnings

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import lmrl_gym
from envs_registry import ENV_SPECS, register_envs
from lmrl_gym import TextGenEnv, TextGenVectorEnv

IDS = [spec.id for spec in ENV_SPECS]


def test_every_spec_is_registered_with_a_vector_entry_point():
    for env_id in IDS:
        spec = gym.spec(env_id)
        assert spec.entry_point == "lmrl_gym.env:TextGenEnv"
        assert spec.vector_entry_point == "lmrl_gym.vector_env:TextGenVectorEnv"
    assert set(lmrl_gym.registered_ids()) == set(IDS)


def test_ids_cover_default_and_every_builtin_task():
    tasks = {spec.task for spec in ENV_SPECS}
    assert "TextGen-v0" in IDS
    assert tasks >= set(lmrl_gym.list_tasks()) - {"file"}


@pytest.mark.parametrize("env_id", IDS)
def test_gymnasium_check_env_passes_without_warnings(env_id):
    env = gym.make(env_id)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gym_check_env(env.unwrapped)
    assert [str(w.message) for w in caught] == []


@pytest.mark.parametrize("env_id", IDS)
def test_sb3_check_env_passes_without_warnings(env_id):
    env = gym.make(env_id)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sb3_check_env(env, warn=True)
    assert [str(w.message) for w in caught] == []


@pytest.mark.parametrize("env_id", IDS)
def test_make_vec_returns_the_native_vector_env(env_id):
    venv = gym.make_vec(env_id, num_envs=3)
    assert isinstance(venv.unwrapped, TextGenVectorEnv)
    obs, _ = venv.reset(seed=0)
    assert obs["prompt_ids"].shape[0] == 3
    single = gym.make(env_id)
    assert venv.single_observation_space == single.observation_space


def test_make_with_module_prefix_in_a_fresh_interpreter():
    code = (
        "import gymnasium as gym, sys\n"
        "env = gym.make('lmrl_gym:TextGen-Copy-v0')\n"
        "obs, info = env.reset(seed=0)\n"
        "assert set(obs) == {'prompt_ids', 'prefix_ids'}\n"
        "print(type(env.unwrapped).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "TextGenEnv"


def test_importing_the_registry_does_not_import_torch():
    code = "import sys, envs_registry; envs_registry.register_envs(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_registering_twice_is_harmless():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        register_envs()
        gym.register_envs(lmrl_gym)


def test_spec_kwargs_can_be_overridden():
    env = gym.make("TextGen-Copy-v0", reward="exact_match", max_new_tokens=5)
    assert isinstance(env.unwrapped, TextGenEnv)
    assert env.observation_space["prefix_ids"].shape == (5,)
    assert env.unwrapped.setup.reward.name == "exact_match"
