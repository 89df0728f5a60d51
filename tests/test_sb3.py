"""Unmodified Stable-Baselines3 and sb3-contrib algorithms on the environments."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from sb3_contrib import MaskablePPO
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv

from agents.sb3 import SB3VecEnv
from lmrl_gym import TextGenVectorEnv

SMALL_COPY = {"task_kwargs": {"num_symbols": 6, "min_length": 3, "max_length": 3}}


def test_sb3_ppo_multi_input_policy_trains_2048_steps_on_copy():
    env = gym.make("TextGen-Copy-v0", **SMALL_COPY)
    model = PPO("MultiInputPolicy", env, n_steps=512, batch_size=128, n_epochs=2, seed=0, device="cpu")
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(total_timesteps=2048)
    assert model.num_timesteps >= 2048
    assert any(not np.allclose(a, b.detach()) for a, b in zip(before, model.policy.parameters(), strict=True))
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(int(action))


def test_sb3_contrib_maskable_ppo_trains_2048_steps_and_never_takes_masked_ids():
    env = DummyVecEnv([lambda: gym.make("TextGen-Copy-v0", **SMALL_COPY)] * 2)
    model = MaskablePPO(
        "MultiInputPolicy", env, n_steps=512, batch_size=128, n_epochs=2, seed=0, device="cpu"
    )
    model.learn(total_timesteps=2048)
    assert model.num_timesteps >= 2048
    invalid = env.envs[0].unwrapped.tokenizer.invalid_action_ids
    masks = np.array(env.env_method("action_masks"))
    obs = env.reset()
    actions = [model.predict(obs, action_masks=masks)[0] for _ in range(50)]
    assert not np.isin(np.concatenate(actions), invalid).any()


def test_sb3_ppo_on_the_native_vector_env_through_the_adapter():
    venv = SB3VecEnv(TextGenVectorEnv(num_envs=16, task="copy", info_text=False, **SMALL_COPY))
    model = PPO("MultiInputPolicy", venv, n_steps=64, batch_size=256, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=2048)
    assert model.num_timesteps >= 2048
    assert len(model.ep_info_buffer) > 0  # episode returns reach SB3's logger


def test_adapter_reports_terminal_observation_and_episode_stats():
    native = TextGenVectorEnv(num_envs=3, task="copy", **SMALL_COPY)
    venv = SB3VecEnv(native)
    venv.seed(5)
    first = venv.reset()
    eos, a = native.tokenizer.eos_id, native.tokenizer.encode("a")[0]
    venv.step(np.array([a, a, eos]))
    obs, rewards, dones, infos = venv.step(np.array([a, eos, a]))
    assert list(dones) == [False, True, False]
    assert infos[1]["episode"]["l"] == 2 and infos[1]["TimeLimit.truncated"] is False
    assert list(infos[1]["terminal_observation"]["prefix_ids"][:2]) == [a, eos]
    assert not obs["prefix_ids"][1].any()  # autoreset: env 1 already shows its next episode
    assert rewards.dtype == np.float32 and infos[0] == {}
    masks = venv.env_method("action_masks")
    assert len(masks) == 3 and masks[0].shape == (native.tokenizer.vocab_size,)
    venv.seed(5)
    np.testing.assert_array_equal(venv.reset()["prompt_ids"], first["prompt_ids"])


@pytest.mark.parametrize("adapter", ["DummyVecEnv", "SB3VecEnv"])
def test_sb3_does_not_bootstrap_a_value_at_the_max_new_tokens_cut_off(adapter):
    """SB3 adds gamma * V(last obs) to the reward of a *truncated* step. The cut-off is terminal, so with a
    value net stuck at 10 the stored rewards must still be the env's own (BLEU, at most 1)."""
    kwargs = {"max_new_tokens": 2, **SMALL_COPY}
    if adapter == "DummyVecEnv":
        env = DummyVecEnv([lambda: gym.make("TextGen-Copy-v0", **kwargs)])
    else:
        env = SB3VecEnv(TextGenVectorEnv(num_envs=4, task="copy", info_text=False, **kwargs))
    model = PPO("MultiInputPolicy", env, n_steps=16, batch_size=16, n_epochs=1, seed=0, device="cpu")
    model.policy.predict_values = lambda obs: torch.full((obs["prompt_ids"].shape[0], 1), 10.0)
    model.learn(total_timesteps=16)
    assert model.rollout_buffer.episode_starts[1:].any()  # episodes ended inside the rollout
    assert model.rollout_buffer.rewards.max() <= 1.0


def test_adapter_flags_the_length_limit():
    native = TextGenVectorEnv(num_envs=2, task="copy", max_new_tokens=2, **SMALL_COPY)
    venv = SB3VecEnv(native)
    venv.reset()
    eos, a = native.tokenizer.eos_id, native.tokenizer.encode("a")[0]
    venv.step(np.array([a, a]))
    _, _, dones, infos = venv.step(np.array([a, eos]))
    assert list(dones) == [True, True]
    assert [info["length_limit"] for info in infos] == [True, False]
    assert [info["TimeLimit.truncated"] for info in infos] == [False, False]


def test_adapter_rejects_other_envs():
    with pytest.raises(TypeError, match="wraps a TextGenVectorEnv"):
        SB3VecEnv(gym.make("TextGen-Copy-v0"))
    with pytest.raises(ValueError, match="output='numpy'"):
        SB3VecEnv(TextGenVectorEnv(num_envs=2, task="copy", output="torch"))
