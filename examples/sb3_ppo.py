"""Unmodified Stable-Baselines3 PPO on a TextGen environment, with our transformer as its policy.

python examples/sb3_ppo.py [--timesteps 16384]

The env reports its max_new_tokens cut-off as terminated (with info["length_limit"]), so SB3 does not
bootstrap a value there; 16,384 steps take greedy play to a mean test reward of 1.000 (seeds 0 and 1).
"""

import argparse

import gymnasium as gym
from stable_baselines3 import PPO

import lmrl_gym
from agents.sb3 import SB3VecEnv  # also registers the "TransformerPolicy" alias

parser = argparse.ArgumentParser()
parser.add_argument("--timesteps", type=int, default=16_384)
args = parser.parse_args()
gym.register_envs(lmrl_gym)
small = {"task_kwargs": {"num_symbols": 6, "min_length": 3, "max_length": 3}}

# The native vector env (batched tensors) behind SB3's VecEnv interface.
venv = SB3VecEnv(gym.make_vec("TextGen-Copy-v0", num_envs=16, info_text=False, **small).unwrapped)
model = PPO(
    "TransformerPolicy",
    venv,
    policy_kwargs={"n_layer": 2, "n_embd": 64},
    learning_rate=1e-3,
    n_steps=32,
    batch_size=128,
    n_epochs=4,
    seed=0,
)
model.learn(total_timesteps=args.timesteps)

env = gym.make("TextGen-Copy-v0", split="test", **small)
returns = []
for episode in range(20):
    obs, info = env.reset(seed=episode)
    done, total = False, 0.0
    while not done:
        action, _ = model.predict(obs, deterministic=True)
        obs, reward, terminated, truncated, info = env.step(int(action))
        total += reward
        done = terminated or truncated
    returns.append(total)
print(f"mean test reward after {args.timesteps} steps of SB3 PPO: {sum(returns) / len(returns):.3f}")
