"""RL4LMs' IMDB task in lmrl-gym's terms: make a GPT-2 continue movie reviews positively.

A ``transformers`` GPT-2 is the policy (:class:`~agents.policies.hf.HFPolicy`), the prompts are the first
64 tokens of IMDB reviews (prompt-only data: no references), the reward is a sentiment classifier's
probability of POSITIVE for the 48-token continuation (:class:`~lmrl_gym.rewards.ClassifierReward`), and
PPO trains with a KL leash to the starting model (``kl_coef`` 0.1, adapted toward 0.5 nats per episode, as
RL4LMs' ``imdb_text_continuation/gpt2_ppo.yml`` sets it). Before and after training it plays the same
held-out (test split) prompts and prints the mean reward of sampled and of greedy continuations, and the KL
of the sampled ones to the starting model::

    python examples/hf_sentiment.py --tiny          # offline: tiny GPT-2, classifier and data, built here
    python examples/hf_sentiment.py                 # gpt2, lvwerra/distilbert-imdb, hf:imdb (downloads them)
    python examples/hf_sentiment.py --model lvwerra/gpt2-imdb --lora-r 16   # RL4LMs' starting model; LoRA

RL4LMs' config starts from ``lvwerra/gpt2-imdb`` (GPT-2 fine-tuned on IMDB) and trains 50 iterations of
128 steps x 10 envs = 1,280 tokens with learning rate 1e-6 and 5 epochs; the defaults here take its
learning rate, epochs and token budget (64,000), with rollouts and minibatches counted in episodes (32 and
8). Two differences: RL4LMs forces 48 new tokens (``min_length``), where here an episode also ends at eos;
and its GRUE tables also report perplexity, which this script does not compute.

``--tiny`` builds everything in a temporary folder with :mod:`agents.hf_tiny` (a 2 x 64 GPT-2 and a
classifier with random weights, its output layer scaled so that its probabilities spread over [0, 1], on a
byte-level BPE tokenizer trained on the built-in tasks' text, and a prompt-only data set of that text saved
with ``save_to_disk``) and runs on one CPU thread: the real loading code runs, nothing is downloaded, and
the numbers only show that the pipeline raises the reward, not what GPT-2 reaches.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import lmrl_gym  # noqa: F401  (registers the TextGen ids)
from agents import PPO
from agents.evaluation import replay_rewards
from agents.generate import decode_ids
from agents.policies import HFPolicy
from agents.rollout import collect_trajectories
from lmrl_gym.rewards import ClassifierReward
from lmrl_gym.vector_env import TextGenVectorEnv

HUB = {"model": "gpt2", "classifier": "lvwerra/distilbert-imdb", "dataset": "hf:imdb"}
# RL4LMs' IMDB settings (gpt2_ppo.yml): 64 prompt tokens, 48 new, KL coefficient 0.1 with target 0.5,
# learning rate 1e-6, 5 epochs, 50 iterations of 128 steps x 10 envs = 64,000 tokens.
HUB_SETTINGS = {"learning_rate": 1e-6, "timesteps": 64_000, "eval_prompts": 200}
# The tiny random GPT-2 takes a larger step, and a budget of about 20 s of PPO on one CPU thread.
TINY_SETTINGS = {"learning_rate": 3e-4, "timesteps": 20_000, "eval_prompts": 100}
# A classifier with random weights gives every text about the same probability (its two logits differed by
# a standard deviation of 0.06 on task text): scaling its output layer spreads the probabilities over
# [0, 1] (a standard deviation of 0.38 over a random GPT-2's continuations), so that continuations differ
# in reward. It stays a random function of the text.
TINY_CLASSIFIER_SCALE = 40.0


def build_tiny_assets(folder: Path, num_prompts: int = 1000) -> dict[str, str]:
    """A tiny GPT-2, a NEGATIVE / POSITIVE classifier (random weights, output layer scaled by
    :data:`TINY_CLASSIFIER_SCALE`) and a prompt-only data set (a ``text`` column, as IMDB's) in ``folder``;
    returns the ``--model`` / ``--classifier`` / ``--dataset`` values that load them by path."""
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification

    from agents import hf_tiny

    hf_tiny.build_gpt2(folder / "gpt2")
    hf_tiny.build_classifier(folder / "classifier")
    classifier = AutoModelForSequenceClassification.from_pretrained(folder / "classifier")
    with torch.no_grad():
        classifier.score.weight.mul_(TINY_CLASSIFIER_SCALE)  # GPT-2 classifier head: score
    classifier.save_pretrained(folder / "classifier")
    # Sentence-like prompts of a few words, each once, in a fixed order.
    texts = sorted({t for t in hf_tiny.task_texts() if 4 <= len(t.split()) <= 12})
    rows = [{"text": text} for text in texts[:: max(1, len(texts) // num_prompts)][:num_prompts]]
    Dataset.from_list(rows).save_to_disk(str(folder / "reviews"))
    return {
        "model": str(folder / "gpt2"),
        "classifier": str(folder / "classifier"),
        "dataset": str(folder / "reviews"),
    }


@dataclass
class Scores:
    """What one policy does on the held-out prompts."""

    sampled_reward: float  # mean classifier reward of one sampled continuation per prompt
    greedy_reward: float  # mean classifier reward of the greedy continuation
    kl: float  # KL(pi || pi_ref) of the continuations, nats per episode (k3 estimate on the sampled ones)
    sampled_length: float  # mean tokens per sampled continuation
    example: str  # the greedy continuation of the first prompt


@torch.no_grad()
def score(policy: HFPolicy, reference: Any, env: gym.Env, count: int, seed: int) -> Scores:
    """Play the first ``count`` test prompts with ``policy``: one sampled episode each (noise fixed by
    ``seed``) and one greedy, paid by the env's reward.

    KL(pi || pi_ref) of whole continuations is the sum over their tokens of the per-token KL; each is
    estimated on the sampled token by ``k3 = exp(d) - 1 - d``, ``d = log pi_ref - log pi`` (Schulman's
    estimator, also TRL's): unbiased like the plain log-ratio ``-d``, but never negative and with much less
    variance when the two policies are close, as a leashed policy is.

    Played here rather than by ``agents.evaluate``, which decodes one way per call and returns no log-probs.
    """
    setup = env.unwrapped.setup
    count = min(count, len(setup.task.examples("test")))
    rows = np.arange(count)
    venv = TextGenVectorEnv(
        num_envs=count, split="test", output="torch", info_text=False, device=policy.device, **setup.kwargs
    )
    generator = torch.Generator(device=policy.device).manual_seed(seed)
    traj = collect_trajectories(policy, venv, generator, reset_options={"index": rows})
    batch = traj.unpack()
    ref = reference.evaluate_sequences(batch.prompts, batch.tokens, batch.lengths)
    d = ref.log_probs - batch.log_probs
    kl = ((d.exp() - 1 - d) * batch.mask).sum(1)

    prompts = venv.setup.tensors["prompts"][:count].to(policy.device)
    # decode_ids keeps the module's mode, and collect_trajectories restores train mode: GPT-2's dropout
    # (0.1) would make "greedy" a sample.
    was_training = policy.training
    policy.eval()
    greedy = decode_ids(policy, prompts, method="greedy")
    policy.train(was_training)
    greedy_rewards = replay_rewards(setup, "test", torch.as_tensor(rows), greedy, policy.tokenizer.eos_id)
    first = greedy.tokens[0, 0, : int(greedy.lengths[0, 0])].tolist()
    return Scores(
        sampled_reward=float(traj.episode_returns().mean()),
        greedy_reward=float(np.mean(greedy_rewards)),
        kl=float(kl.mean()),
        sampled_length=float(batch.lengths.float().mean()),
        example=policy.tokenizer.decode(first),
    )


def lora_config(rank: int) -> Any:
    """A LoRA adapter of rank ``rank`` on the model's default attention projections (peft's table)."""
    import peft

    return peft.LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, task_type="CAUSAL_LM")


def run(args: argparse.Namespace, names: dict[str, str]) -> None:
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    lora = lora_config(args.lora_r) if args.lora_r else None
    policy = HFPolicy.from_pretrained(names["model"], device=args.device, lora=lora)
    reward = ClassifierReward(names["classifier"], label=args.label)
    env = gym.make(
        "TextGen-v0",
        task=names["dataset"],
        task_kwargs={"prompt_column": args.prompt_column},
        tokenizer=names["model"],  # the env speaks the model's tokenizer ...
        num_actions=policy.num_actions,  # ... with one action per output logit
        reward=reward,
        max_prompt_tokens=args.max_prompt_tokens,
        max_new_tokens=args.max_new_tokens,
    )
    policy.check_env(env)  # binds the policy to the env's widths
    reference = policy.frozen_copy()  # the KL reference: the policy as it starts (LoRA: its adapters only)
    trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    print(
        f"policy {names['model']} ({trainable:,} trainable parameters{', LoRA' if lora else ''}), reward "
        f"P({args.label}) of {names['classifier']}, prompts from {names['dataset']} "
        f"({len(env.unwrapped.setup.data):,} train); ready in "
        f"{time.perf_counter() - started:.0f}s",
        flush=True,
    )
    before = score(policy, reference, env, args.eval_prompts, args.seed)

    model = PPO(
        policy,
        env,
        n_envs=args.n_envs,
        batch_size=args.batch_size,
        n_epochs=args.n_epochs,
        learning_rate=args.learning_rate,
        kl_coef=args.kl_coef,
        target_kl_penalty=args.target_kl,
        reference_policy=reference,
        seed=args.seed,
    )
    rollouts: list[float] = []

    def report(local_vars: dict[str, Any], _globals: dict[str, Any]) -> bool:
        rollouts.append(float(local_vars["returns"].mean()))
        if len(rollouts) % args.log_every == 0:
            print(
                f"rollout {len(rollouts)}: {model.num_timesteps:,} tokens, mean reward {rollouts[-1]:.3f}, "
                f"kl_coef {model.kl.coef:.4f}",
                flush=True,
            )
        return True

    trained = time.perf_counter()
    model.learn(args.timesteps, callback=report)
    seconds = time.perf_counter() - trained
    after = score(policy, reference, env, args.eval_prompts, args.seed)

    count = min(args.eval_prompts, len(env.unwrapped.setup.task.examples("test")))
    print(f"\n{count} held-out (test) prompts, {args.max_new_tokens} new tokens at most, seed {args.seed}:\n")
    print("| metric | before PPO | after PPO |\n|---|---:|---:|")
    rows = (
        (f"mean reward P({args.label}), sampled", "sampled_reward", ".3f"),
        (f"mean reward P({args.label}), greedy", "greedy_reward", ".3f"),
        ("KL(policy || start), nats per continuation", "kl", ".3f"),
        ("mean length, sampled (tokens, eos included)", "sampled_length", ".1f"),
    )
    for label, key, spec in rows:
        print(f"| {label} | {getattr(before, key):{spec}} | {getattr(after, key):{spec}} |")
    print(
        f"\ngreedy, first prompt, before: {before.example!r}\n                      after:  {after.example!r}"
    )
    print(
        f"\nPPO: {model.num_timesteps:,} tokens in {seconds:.0f}s ({len(rollouts)} rollouts of {args.n_envs} "
        f"episodes), final kl_coef {model.kl.coef:.4f}"
    )
    if args.save:
        policy.save(args.save)
        print(f"saved the policy to {args.save} (HFPolicy.load, or lmrl-gym eval --checkpoint)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="build tiny local models and data (offline)")
    parser.add_argument(
        "--model", default=None, help=f"causal LM, hub name or folder (default: {HUB['model']})"
    )
    parser.add_argument(
        "--classifier", default=None, help=f"sequence classifier (default: {HUB['classifier']})"
    )
    parser.add_argument(
        "--dataset",
        default=None,
        help=f"hf:NAME[:CONFIG] or a save_to_disk folder, prompt-only (default: {HUB['dataset']})",
    )
    parser.add_argument("--prompt-column", default="text", help="default: %(default)s")
    parser.add_argument(
        "--label", default="POSITIVE", help="the classifier label paid (default: %(default)s)"
    )
    parser.add_argument("--max-prompt-tokens", type=int, default=64, help="default: %(default)s")
    parser.add_argument("--max-new-tokens", type=int, default=48, help="default: %(default)s")
    parser.add_argument(
        "--timesteps", type=int, default=None, help="PPO tokens (default: 64000; --tiny: 20000)"
    )
    parser.add_argument("--n-envs", type=int, default=32, help="episodes per rollout (default: %(default)s)")
    parser.add_argument(
        "--batch-size", type=int, default=8, help="episodes per minibatch (default: %(default)s)"
    )
    parser.add_argument("--n-epochs", type=int, default=5, help="default: %(default)s")
    parser.add_argument(
        "--learning-rate", type=float, default=None, help="default: 1e-6 (RL4LMs); --tiny: 3e-4"
    )
    parser.add_argument("--kl-coef", type=float, default=0.1, help="default: %(default)s")
    parser.add_argument(
        "--target-kl", type=float, default=0.5, help="adaptive KL target per episode (default: %(default)s)"
    )
    parser.add_argument("--lora-r", type=int, default=0, help="LoRA rank; 0: train every weight (default)")
    parser.add_argument(
        "--eval-prompts", type=int, default=None, help="held-out prompts scored (default: 200; --tiny: 100)"
    )
    parser.add_argument("--log-every", type=int, default=5, help="rollouts between progress lines")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ... (default: %(default)s)")
    parser.add_argument(
        "--save",
        default=None,
        help="write the trained policy folder here (with --tiny --lora-r, the adapters name a base model in "
        "a temporary folder, gone when the script ends)",
    )
    args = parser.parse_args(argv)
    defaults = TINY_SETTINGS if args.tiny else HUB_SETTINGS
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.tiny and any(getattr(args, key) is not None for key in HUB):
        parser.error(
            "--tiny builds its own model, classifier and data set: drop --model / --classifier / --dataset"
        )
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # Keeping each review's first --max-prompt-tokens tokens is the task, not an accident: every env built
    # on the data (training, held-out scoring) would say so again.
    warnings.filterwarnings("ignore", message=r".* prompts in split .* are longer than max_prompt_tokens")
    if not args.tiny:
        run(args, {key: getattr(args, key) or value for key, value in HUB.items()})
        return
    # Tiny models: on a small CPU a second intra-op thread only adds synchronisation.
    torch.set_num_threads(1)
    # The tiny classifier reads 128 tokens; a random GPT-2's stray bytes decode to 3-byte replacement
    # characters that re-encode to more than that. The cut is harmless here.
    warnings.filterwarnings("ignore", message=r"reward 'classifier': texts longer than")
    with tempfile.TemporaryDirectory(prefix="hf_sentiment_") as folder:
        started = time.perf_counter()
        names = build_tiny_assets(Path(folder))
        print(f"built the tiny GPT-2, classifier and data set in {time.perf_counter() - started:.0f}s")
        run(args, names)


if __name__ == "__main__":
    main()
