"""Fine-tune a pretrained policy with PPO on the BLEU reward and compare test BLEU with the MLE start.

    python examples/finetune_from_mle.py [--learning-rate 1e-5 --kl-coef 0.01 --timesteps 20000 --seeds 0 1 2]

One causal 2 x 128 policy is pretrained for ``--pretrain-epochs`` on TextGen-v0 (seed 0); every seed then
fine-tunes its own copy. Prints greedy test BLEU of the start and of each seed (mean and std). The
defaults are the fine-tuning defaults of ``lmrl-gym train --pretrain-epochs N`` (agents/cli.py).
"""

import argparse
import copy
import statistics

import gymnasium as gym
import torch

import lmrl_gym
from agents import PPO, TransformerPolicy, evaluate, pretrain
from agents.cli import FINETUNE_KL_COEF, FINETUNE_LEARNING_RATES

parser = argparse.ArgumentParser()
parser.add_argument("--env", default="TextGen-v0")
parser.add_argument("--pretrain-epochs", type=int, default=1)
parser.add_argument("--learning-rate", type=float, default=FINETUNE_LEARNING_RATES["ppo"])
parser.add_argument("--kl-coef", type=float, default=FINETUNE_KL_COEF)
parser.add_argument("--timesteps", type=int, default=20_000)
parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
parser.add_argument("--max-examples", type=int, default=None)
args = parser.parse_args()
gym.register_envs(lmrl_gym)
torch.set_num_threads(1)  # tiny models on a shared CPU run faster on one thread

env = gym.make(args.env)
torch.manual_seed(0)
start = TransformerPolicy.for_env(env, n_layer=2, n_embd=128, device="cpu")
pretrain(start, env, epochs=args.pretrain_epochs, learning_rate=1e-3)
before = evaluate(start, env, max_examples=args.max_examples)["bleu"]
print(f"MLE start: test BLEU {before:.2f}")
after = []
for seed in args.seeds:
    model = PPO(
        copy.deepcopy(start),
        env,
        learning_rate=args.learning_rate,
        kl_coef=args.kl_coef,
        n_envs=64,
        seed=seed,
        device="cpu",
    )
    model.learn(args.timesteps)
    after.append(evaluate(model.policy, env, max_examples=args.max_examples)["bleu"])
    print(f"seed {seed}: test BLEU {after[-1]:.2f}")
spread = statistics.stdev(after) if len(after) > 1 else 0.0
print(
    f"lr {args.learning_rate}, kl_coef {args.kl_coef}: {before:.2f} -> {statistics.mean(after):.2f} +- {spread:.2f}"
)
