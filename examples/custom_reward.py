"""Plug in your own reward: a plain Python function on strings, alone or mixed with BLEU."""

import gymnasium as gym

import lmrl_gym
from lmrl_gym.rewards import batched

gym.register_envs(lmrl_gym)


def brevity(text: str, references: list[str], prompt: str) -> float:
    """Called once per episode: 1 for text as short as the shortest reference, less when longer."""
    shortest = min(len(r.split()) for r in references)
    return min(1.0, shortest / max(1, len(text.split())))


@batched
def mentions_mille(texts, references, prompts):
    """Called once per batch of finished episodes (faster for vector envs)."""
    return [float("mille" in t.split()) for t in texts]


env = gym.make("TextGen-v0", reward={"bleu": 1.0, brevity: 0.2, mentions_mille: 0.1})
obs, info = env.reset(seed=0)
tokenizer = env.unwrapped.tokenizer
for token in tokenizer.encode("deux mille") + [tokenizer.eos_id]:
    obs, reward, terminated, truncated, info = env.step(token)
print(f"text {info['text']!r} vs {info['references']}: reward {reward:.3f}")
print("components:", {k: round(v, 3) for k, v in info["reward_components"].items()})
