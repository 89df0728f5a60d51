"""Play a few episodes of ``TextGen-v0`` with two simple policies and print what happened.

    python -m lmrl_gym.demo [--env TextGen-v0] [--episodes 5] [--seed 0]

The *random* policy samples valid token ids (``info["action_mask"]``). The *retrieval* policy finds the
training example whose prompt shares the most words with this prompt and writes its reference: no
learning, but a baseline that shows what the BLEU reward pays for. Both act only through ``env.step``.
"""

from __future__ import annotations

import argparse
from collections import Counter

import gymnasium as gym
import numpy as np

import lmrl_gym


class RetrievalPolicy:
    """Answer with the reference of the most similar training prompt (bag-of-words overlap)."""

    def __init__(self, env: gym.Env) -> None:
        unwrapped = env.unwrapped
        self.tokenizer = unwrapped.tokenizer
        self.train = unwrapped.task.examples("train")
        self.bags = [Counter(ex.prompt.split()) for ex in self.train]
        self.plan: list[int] = []

    def start(self, prompt: str) -> None:
        bag = Counter(prompt.split())
        best = max(range(len(self.train)), key=lambda i: sum((self.bags[i] & bag).values()))
        self.plan = self.tokenizer.encode(self.train[best].references[0]) + [self.tokenizer.eos_id]

    def act(self, obs: dict, info: dict) -> int:
        return self.plan.pop(0) if self.plan else self.tokenizer.eos_id


class RandomPolicy:
    def __init__(self, env: gym.Env, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def start(self, prompt: str) -> None:
        pass

    def act(self, obs: dict, info: dict) -> int:
        return int(self.rng.choice(np.flatnonzero(info["action_mask"])))


def play_episode(env: gym.Env, policy, index: int) -> dict:
    obs, info = env.reset(options={"index": index})
    prompt = env.unwrapped.setup.data.examples[index].prompt
    policy.start(prompt)
    total, done = 0.0, False
    while not done:
        obs, reward, terminated, truncated, info = env.step(policy.act(obs, info))
        total += reward
        done = terminated or truncated
    return {"prompt": prompt, "text": info["text"], "references": info["references"], "reward": total}


def format_table(rows: list[dict]) -> str:
    header = ["policy", "prompt", "generated text", "reference", "reward"]
    cells = [
        [r["policy"], r["prompt"], r["text"] or "(empty)", " | ".join(r["references"]), f"{r['reward']:.3f}"]
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    line = lambda values: "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env", default="TextGen-v0")
    parser.add_argument("--split", default="test")
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    gym.register_envs(lmrl_gym)
    env = gym.make(args.env, split=args.split)
    env.reset(seed=args.seed)
    indices = np.random.default_rng(args.seed).choice(
        env.unwrapped.num_examples, size=args.episodes, replace=False
    )
    policies = {"random": RandomPolicy(env, args.seed), "retrieval": RetrievalPolicy(env)}
    rows, means = [], {}
    for name, policy in policies.items():
        results = [play_episode(env, policy, int(i)) for i in indices]
        rows += [{"policy": name, **r} for r in results]
        means[name] = float(np.mean([r["reward"] for r in results]))
    spec = env.spec
    print(f"{args.env} ({spec.kwargs['task']} task, {spec.kwargs['reward']} reward), {args.split} split\n")
    print(format_table(rows))
    print("\nmean reward: " + ", ".join(f"{k} {v:.3f}" for k, v in means.items()))


if __name__ == "__main__":
    main()
