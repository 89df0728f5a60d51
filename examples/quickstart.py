"""Make an environment and play one episode with random valid actions."""

import gymnasium as gym
import numpy as np

import lmrl_gym

gym.register_envs(lmrl_gym)

env = gym.make("TextGen-v0", render_mode="ansi")  # English number words -> French, BLEU reward
obs, info = env.reset(seed=0)
print("observation:", {k: v.tolist() for k, v in obs.items()})
rng = np.random.default_rng(0)
done = False
while not done:
    action = int(rng.choice(np.flatnonzero(info["action_mask"])))  # never pad / bos / unk
    obs, reward, terminated, truncated, info = env.step(action)
    done = terminated or truncated
print(env.render())
print(f"reward {reward:.3f}; components {info['reward_components']}")
