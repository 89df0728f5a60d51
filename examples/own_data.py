"""Your own examples as a task: a JSON Lines file (or CSV) of prompts and references."""

import json
import tempfile
from pathlib import Path

import gymnasium as gym

import lmrl_gym

gym.register_envs(lmrl_gym)

rows = [
    {"prompt": f"greet {name}", "references": [f"hello {name}", f"hi {name}"]}
    for name in ["ada", "alan", "grace", "edsger", "barbara", "donald", "frances", "john", "margaret", "ken"]
]
path = Path(tempfile.mkdtemp()) / "greetings.jsonl"
path.write_text("".join(json.dumps(r) + "\n" for r in rows))

env = gym.make("TextGen-v0", task=str(path))  # splits carved deterministically, tokenizer from train
obs, info = env.reset(seed=0)
example = env.unwrapped.setup.data.examples[info["example_index"]]
tokenizer = env.unwrapped.tokenizer
for token in tokenizer.encode(example.references[1]) + [tokenizer.eos_id]:
    obs, reward, terminated, truncated, info = env.step(token)
print(f"{example.prompt!r} -> {info['text']!r}: BLEU reward {reward:.2f}")
