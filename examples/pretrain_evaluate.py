"""Pretrain a transformer policy by maximum likelihood, then evaluate it with greedy and beam search.

python examples/pretrain_evaluate.py [--env TextGen-Reverse-v0 --arch causal --epochs 8]
"""

import argparse

import gymnasium as gym
import torch

import lmrl_gym
from agents import TransformerPolicy, decode, evaluate, format_evaluation, pretrain

parser = argparse.ArgumentParser()
parser.add_argument("--env", default="TextGen-Reverse-v0")
parser.add_argument("--arch", default="causal", choices=["causal", "seq2seq"])
parser.add_argument("--epochs", type=int, default=8)
parser.add_argument("--max-examples", type=int, default=None, help="evaluate only this many test examples")
args = parser.parse_args()
gym.register_envs(lmrl_gym)
torch.manual_seed(0)

env = gym.make(args.env)
policy = TransformerPolicy.for_env(env, arch=args.arch, n_layer=2, n_head=4, n_embd=128)
before = evaluate(policy, env, split="test", max_examples=args.max_examples)
history = pretrain(policy, env, epochs=args.epochs, learning_rate=2e-3, progress_bar=True)
print(
    f"validation loss {history[0]['validation_loss']:.3f} -> {history[-1]['validation_loss']:.4f} nats/token"
)
greedy = evaluate(policy, env, split="test", max_examples=args.max_examples)
beam = evaluate(policy, env, split="test", method="beam", beam_size=4, max_examples=args.max_examples)
print(
    format_evaluation(
        before, greedy, beam, names=["untrained (greedy)", "pretrained greedy", "pretrained beam 4"]
    )
)
prompt = env.unwrapped.task.examples("test")[0].prompt
print(f"\n{prompt!r} -> {decode(policy, prompt, method='beam', beam_size=4)!r}")
