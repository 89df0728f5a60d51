"""End-to-end demo: a brief MLE start, then PPO on half BLEU, half exact match, then a before / after table.

Run ``python -m agents.demo`` (the same as ``python -m agents.commands.demo``; about a minute on an idle 2-core CPU; PyTorch slows down several-fold when
other processes share the cores). On ``TextGen-v0`` (English number words to
French) it

1. builds a small causal :class:`~agents.policies.transformer.TransformerPolicy`;
2. pretrains it by maximum likelihood on a *subset* of the training pairs (``--pretrain-examples``, one
   pass): a full epoch already reaches ~100 BLEU on this task, which would leave RL nothing to do, so the
   demo starts RL from a deliberately half-trained policy;
3. trains it with PPO on the reward ``{"bleu": 0.5, "exact_match": 0.5}`` (:data:`DEMO_REWARD`; BLEU alone
   pays partial credit, and PPO on it raised BLEU while exact match fell: the task's own success measure
   must be in the reward for RL to raise it; ``--reward`` / ``--env-kwargs`` choose another), with a KL
   leash to the pretrained policy,
   evaluating greedy decoding on the validation split every ``--eval-freq`` rollouts and keeping the best
   policy (``best_policy.pt``): single RL runs end at different points of their noise, and model selection
   on validation is how one reports a run without touching the test split;
4. prints greedy BLEU, beam-4 BLEU, exact match and mean reward on the test split before RL and for that
   best policy, and writes ``learning_curve.png`` (with ``progress.csv`` and the final ``policy.pt``) into
   ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from stable_baselines3.common.logger import configure

from agents.algorithms import PPO
from agents.commands.arguments import (
    add_env_arguments,
    env_kwargs,
    make_env,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)
from agents.commands.cli import plot_learning_curve, validation_checks
from agents.evaluation import evaluate
from agents.policies.base import Policy
from agents.policies.transformer import TransformerPolicy
from agents.pretrain import pretrain_subset

# The demo's reward: BLEU guides with partial credit, exact match pays for the right answer.
DEMO_REWARD = {"bleu": 0.5, "exact_match": 0.5}
# (row label, evaluate() key, scale, decimals): exact match and BLEU read best as percentages.
TABLE_ROWS = (
    ("greedy BLEU", "greedy", "bleu", 1.0, 2),
    ("beam-{k} BLEU", "beam", "bleu", 1.0, 2),
    ("exact match (greedy, %)", "greedy", "exact_match", 100.0, 2),
    ("mean reward (greedy)", "greedy", "mean_reward", 1.0, 3),
)


def measure(policy: Policy, env: Any, beam_size: int, max_examples: int | None) -> dict[str, dict]:
    """Greedy and beam-search evaluations on the test split."""
    return {
        "greedy": evaluate(policy, env, split="test", method="greedy", max_examples=max_examples),
        "beam": evaluate(
            policy, env, split="test", method="beam", beam_size=beam_size, max_examples=max_examples
        ),
    }


def format_table(before: dict[str, dict], after: dict[str, dict], beam_size: int, reward: str) -> str:
    """A markdown table: one row per metric, columns before RL / after RL / change; ``reward`` (the env's
    reward spec as JSON) is named under it."""
    lines = ["| metric | before RL | after RL | change |", "|---|---:|---:|---:|"]
    for label, method, key, scale, digits in TABLE_ROWS:
        b, a = before[method][key] * scale, after[method][key] * scale
        lines.append(
            f"| {label.format(k=beam_size)} | {b:.{digits}f} | {a:.{digits}f} | {a - b:+.{digits}f} |"
        )
    count = before["greedy"]["count"]
    lines.append(f"\ntest split, first {count} examples; BLEU: {before['greedy']['bleu_signature']}")
    lines.append(f"reward (what PPO maximised, the table's mean reward): {reward}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m agents.demo",
        description="Brief MLE pretraining, then PPO on half BLEU, half exact match (--reward / --env-kwargs: "
        "another reward); prints a before / after table.",
    )
    add_env_arguments(parser)
    parser.add_argument("--out", default="runs/demo", help="output folder (default: %(default)s)")
    parser.add_argument(
        "--pretrain-examples",
        type=non_negative_int,
        default=4000,
        help="training pairs for the one MLE pass; a full epoch of TextGen-v0 is 8000 (default: %(default)s)",
    )
    parser.add_argument(
        "--pretrain-learning-rate", type=positive_float, default=1e-3, help="default: %(default)s"
    )
    parser.add_argument(
        "--timesteps", type=positive_int, default=200000, help="PPO budget in tokens (default: %(default)s)"
    )
    parser.add_argument(
        "--n-envs", type=positive_int, default=64, help="episodes per rollout (default: %(default)s)"
    )
    parser.add_argument(
        "--learning-rate", type=positive_float, default=1e-4, help="PPO (default: %(default)s)"
    )
    parser.add_argument(
        "--kl-coef", type=non_negative_float, default=0.05, help="KL leash (default: %(default)s)"
    )
    parser.add_argument("--n-layer", type=positive_int, default=2, help="default: %(default)s")
    parser.add_argument("--n-embd", type=positive_int, default=128, help="default: %(default)s")
    parser.add_argument("--beam-size", type=positive_int, default=4, help="default: %(default)s")
    parser.add_argument(
        "--eval-examples",
        type=positive_int,
        default=500,
        help="test (and validation) examples evaluated (default: %(default)s)",
    )
    parser.add_argument(
        "--eval-freq",
        type=non_negative_int,
        default=10,
        help="rollouts between validation evaluations; the best policy is reported. 0: no evaluation during "
        "training, report the final policy (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    parser.add_argument("--device", default="auto", help="default: %(default)s")
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="run the policy under bfloat16 autocast (fp32 weights, heads and optimizer) where it applies: "
        "CUDA, or a CPU with bf16 units (AMX / AVX-512 BF16); elsewhere fp32",
    )
    parser.add_argument("--no-progress-bar", action="store_true", help="hide the PPO progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    env = make_env(parser, args, defaults={"reward": DEMO_REWARD})
    # As the user wrote it (the env holds the built Reward object).
    reward = json.dumps(env_kwargs(parser, args).get("reward", DEMO_REWARD), default=str)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(args.seed)
    policy = TransformerPolicy.for_env(
        env,
        arch="causal",
        n_layer=args.n_layer,
        n_embd=args.n_embd,
        device=args.device,
        bf16_autocast=args.bf16,
    )
    loss = pretrain_subset(
        policy, env, args.pretrain_examples, learning_rate=args.pretrain_learning_rate, seed=args.seed
    )
    print(f"MLE pretraining on {args.pretrain_examples} pairs: last batch loss {loss:.3f} nats/token")
    before = measure(policy, env, args.beam_size, args.eval_examples)
    print(f"before RL: greedy BLEU {before['greedy']['bleu']:.1f}", flush=True)

    model = PPO(
        policy,
        env,
        learning_rate=args.learning_rate,
        n_envs=args.n_envs,
        kl_coef=args.kl_coef,
        seed=args.seed,
    )
    # CSV only: the per-rollout stdout table would bury the result; the progress bar shows headway.
    logger = configure(str(out), ["csv"])
    model.set_logger(logger)
    validation = validation_checks(env, args.eval_freq, args.eval_examples, out)
    model.learn(args.timesteps, callback=validation, progress_bar=not args.no_progress_bar)
    logger.close()
    policy.save(out / "policy.pt")
    plot = out / "learning_curve.png"
    plot_learning_curve(out / "progress.csv", plot, f"PPO on {args.env} (reward {reward})")

    # Fewer rollouts than --eval-freq leave no validation result: the final policy is then the one reported.
    reported = "the final policy"
    best = validation.best_policy(env) if validation else None
    if best is not None:
        policy = best
        reported = (
            f"the best of {len(validation.evaluations)} validation checks (greedy mean reward "
            f"{validation.best:.3f}, after {validation.best_timesteps} tokens)"
        )
    after = measure(policy, env, args.beam_size, args.eval_examples)
    print()
    print(format_table(before, after, args.beam_size, reward))
    print(f"after RL: {reported}")
    print(f"\nlearning curve: {plot}")
    print(f"PPO: {model.num_timesteps} tokens; wall time {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
