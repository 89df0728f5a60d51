"""Judging a learned reward against a known truth (the ``oracle`` task): probe sets, rank correlation,
ROC AUC and a permutation test, all batched numpy."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from lmrl_gym.tasks.oracle import OracleTask

PROBE_GROUPS = ("oracle", "perturbed", "random")


def oracle_probe_set(
    task: OracleTask,
    n_per_group: int,
    rng: np.random.Generator,
    split: str = "test",
    perturb: float = 0.3,
    random_lengths: str = "uniform",
) -> tuple[list[str], list[str], np.ndarray]:
    """A held-out mix of continuations for judging a reward: ``(prompts, texts, group)``.

    Group 0: oracle continuations from ``split``; group 1: the same continuations with a ``perturb``
    fraction of their words (at least one) replaced by uniformly random words; group 2: uniformly random
    word sequences. ``random_lengths="uniform"``: uniform over all sequences of 1 .. ``max_words`` words
    (``max_words`` = the oracle's ``max_length - prompt words``), so long ones dominate as they do in
    number; ``"matched"``: as many words as a random oracle continuation, so only the words differ (the
    harder test: even the oracle's own log-probability ranks some short random sequences above long real
    ones). ``group`` is int ``[3 * n_per_group]``; prompts are real prompts of ``split``.
    """
    if not isinstance(task, OracleTask):
        raise ValueError(f"oracle_probe_set needs the oracle task, got {type(task).__name__}")
    if random_lengths not in ("uniform", "matched"):
        raise ValueError(f"random_lengths must be 'uniform' or 'matched', got {random_lengths!r}")
    examples = task.examples(split)
    num_words = task.oracle.num_words
    picks = rng.integers(len(examples), size=(3, n_per_group))
    prompts = [examples[i].prompt for i in picks.ravel()]
    references = [examples[i].references[0].split() for i in picks.ravel()]
    texts = [" ".join(words) for words in references[:n_per_group]]
    for words in references[n_per_group : 2 * n_per_group]:
        words = list(words)
        n_swap = min(len(words), max(1, round(perturb * len(words))))
        for j, new in zip(
            rng.choice(len(words), size=n_swap, replace=False),
            rng.integers(num_words, size=n_swap),
            strict=True,
        ):
            words[j] = f"w{new}"
        texts.append(" ".join(words))
    if random_lengths == "matched":
        lengths = np.array([len(words) for words in references[2 * n_per_group :]])
    else:
        max_words = task.oracle.max_length - max(len(p.split()) for p in prompts)
        # P(length l) proportional to the number of sequences of l words, num_words ** l (in log space).
        log_counts = np.arange(1, max_words + 1) * np.log(num_words)
        probs = np.exp(log_counts - log_counts.max())
        lengths = rng.choice(np.arange(1, max_words + 1), size=n_per_group, p=probs / probs.sum())
    for n in lengths:
        texts.append(" ".join(f"w{i}" for i in rng.integers(num_words, size=int(n))))
    return prompts, texts, np.repeat(np.arange(3), n_per_group)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing their mean rank."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    # Each run of equal values gets the mean of the positions it spans.
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_values)) + 1]
    ends = np.r_[starts[1:], len(values)]
    mean_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (Pearson correlation of average ranks)."""
    rx, ry = average_ranks(np.asarray(x)), average_ranks(np.asarray(y))
    if rx.std() == 0 or ry.std() == 0:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])


def roc_auc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """P(score of a positive > score of a negative), ties counting one half (Mann-Whitney U / n1 n2)."""
    positive, negative = np.asarray(positive, dtype=np.float64), np.asarray(negative, dtype=np.float64)
    if len(positive) == 0 or len(negative) == 0:
        raise ValueError("roc_auc needs at least one positive and one negative score")
    ranks = average_ranks(np.concatenate([positive, negative]))
    u = ranks[: len(positive)].sum() - len(positive) * (len(positive) + 1) / 2
    return float(u / (len(positive) * len(negative)))


def permutation_test(
    a: Sequence[float], b: Sequence[float], rng: np.random.Generator, n_permutations: int = 10_000
) -> float:
    """One-sided p-value of ``mean(a) - mean(b) > 0`` under exchangeability of the pooled values.

    Uses ``(1 + #{permuted diff >= observed}) / (1 + n_permutations)``, so p is never 0.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) == 0 or len(b) == 0:
        raise ValueError("permutation_test needs two non-empty samples")
    pooled = np.concatenate([a, b])
    observed = a.mean() - b.mean()
    shuffled = rng.permuted(np.broadcast_to(pooled, (n_permutations, len(pooled))), axis=1)
    diffs = shuffled[:, : len(a)].mean(1) - shuffled[:, len(a) :].mean(1)
    return float((1 + np.sum(diffs >= observed)) / (1 + n_permutations))


def reward_quality(score, task: OracleTask, n_per_group: int = 300, seed: int = 0) -> dict[str, float]:
    """How well a learned sequence reward ranks continuations like the oracle's log-probability does.

    :param score: ``score(prompts, texts) -> [B]`` learned sequence rewards (e.g. ``IRL.score``).
    :return: ``spearman`` (vs the oracle log-probability on the uniform-random probe mix), ``auc``
        (oracle samples vs uniformly random sequences), ``auc_matched`` (vs random sequences of the
        oracle samples' lengths) and ``auc_matched_oracle`` (the same AUC of the oracle's own
        log-probability: the ceiling of ``auc_matched``).
    """
    out = {}
    for kind in ("uniform", "matched"):
        prompts, texts, group = oracle_probe_set(
            task, n_per_group, np.random.default_rng(seed), random_lengths=kind
        )
        learned = np.asarray(score(prompts, texts), dtype=np.float64)
        truth = task.log_prob(prompts, texts)
        if kind == "uniform":
            out["spearman"] = spearman(learned, truth)
            out["auc"] = roc_auc(learned[group == 0], learned[group == 2])
        else:
            out["auc_matched"] = roc_auc(learned[group == 0], learned[group == 2])
            out["auc_matched_oracle"] = roc_auc(truth[group == 0], truth[group == 2])
    return out


def oracle_nll_of_samples(
    policy, task: OracleTask, n: int = 500, seed: int = 0, split: str = "test"
) -> np.ndarray:
    """Oracle negative log-likelihood (nats) of one sampled continuation for each of ``n`` prompts of
    ``split`` (drawn with ``seed``): float64 ``[n]``.

    Samples stop after ``oracle.max_length - prompt words`` tokens, where the oracle itself forces the
    end, so every sample has a finite NLL (an env's ``max_new_tokens`` may allow one word more).
    """
    from agents.generate import decode_ids, encode_prompts

    examples = task.examples(split)
    rows = np.random.default_rng(seed).integers(len(examples), size=n)
    prompts = [examples[i].prompt for i in rows]
    longest_prompt = max(len(p.split()) for p in prompts)
    out = decode_ids(
        policy,
        encode_prompts(policy, prompts),
        method="sample",
        seed=seed,
        max_new_tokens=task.oracle.max_length - longest_prompt,
    )
    tokens, lengths = out.tokens[:, 0].cpu(), out.lengths[:, 0].cpu()
    texts = [policy.tokenizer.decode(row[:n].tolist()) for row, n in zip(tokens, lengths, strict=True)]
    return -task.log_prob(prompts, texts)


def oracle_irl_experiment(
    folder: str | Path,
    irl_timesteps: int = 60_000,
    ppo_timesteps: int = 30_000,
    n_samples: int = 500,
    seed: int = 0,
    loss: str = "maxent",
    env_id: str = "TextGen-Oracle-v0",
    fresh_policy_update: str = "ppo",
) -> dict[str, float | str]:
    """The inverse-RL check on an oracle task, end to end, as the README reports it.

    1. IRL (``agents.IRL``, demonstrations = the task's training texts) for ``irl_timesteps``; the learned
       reward is judged on held-out probes (:func:`reward_quality`) before and after, and saved to
       ``folder/reward_model.pt``.
    2. A *fresh* policy is trained for ``ppo_timesteps`` with the frozen learned reward as its only signal:
       ``fresh_policy_update="ppo"``: plain PPO on ``gym.make(env_id, reward="learned", reward_model=...)``
       (maximises R: mode-seeking); ``"soft"``: the entropy-regularised PPO update IRL itself uses
       (``IRL(..., reward_model=frozen).learn(n, train_reward=False)``, optimum ``exp(R)``).
    3. The oracle NLL of ``n_samples`` sampled continuations of test prompts, before vs after PPO, with a
       one-sided permutation test (10,000 permutations).
    """
    import gymnasium as gym

    from agents.algorithms import PPO
    from agents.irl import IRL
    from lmrl_gym.rewards import RewardNetwork

    env = gym.make(env_id)
    task = env.unwrapped.task
    torch.manual_seed(seed)
    irl = IRL(
        "TransformerPolicy",
        env,
        loss=loss,
        seed=seed,
        device="cpu",
        policy_kwargs={"n_layer": 2, "n_embd": 64},
        reward_kwargs={"n_layer": 1, "n_embd": 64},
    )
    untrained = reward_quality(irl.score, task)
    irl.learn(irl_timesteps)
    learned = reward_quality(irl.score, task)
    reward_path, _ = irl.save(folder)

    if fresh_policy_update not in ("ppo", "soft"):
        raise ValueError(f"fresh_policy_update must be 'ppo' or 'soft', got {fresh_policy_update!r}")
    torch.manual_seed(seed)
    policy_kwargs = {"n_layer": 2, "n_embd": 64}
    if fresh_policy_update == "ppo":
        learned_env = gym.make(env_id, reward="learned", reward_model=reward_path)
        fresh = PPO(
            "TransformerPolicy",
            learned_env,
            learning_rate=3e-4,
            seed=seed,
            device="cpu",
            policy_kwargs=policy_kwargs,
        )
    else:
        frozen = RewardNetwork.load(reward_path)
        fresh = IRL(
            "TransformerPolicy",
            env,
            reward_model=frozen,
            seed=seed,
            device="cpu",
            policy_kwargs=policy_kwargs,
        )
    before = oracle_nll_of_samples(fresh.policy, task, n_samples, seed=seed + 1)
    if fresh_policy_update == "ppo":
        fresh.learn(ppo_timesteps)
    else:
        fresh.learn(ppo_timesteps, train_reward=False)
    after = oracle_nll_of_samples(fresh.policy, task, n_samples, seed=seed + 2)
    examples = task.examples("test")[:n_samples]
    expert = -task.log_prob([e.prompt for e in examples], [e.references[0] for e in examples])
    return {
        "spearman_untrained": untrained["spearman"],
        "auc_untrained": untrained["auc"],
        "auc_matched_untrained": untrained["auc_matched"],
        "spearman": learned["spearman"],
        "auc": learned["auc"],
        "auc_matched": learned["auc_matched"],
        "auc_matched_oracle": learned["auc_matched_oracle"],
        "nll_before": float(before.mean()),
        "nll_after": float(after.mean()),
        "nll_test_references": float(expert.mean()),
        "p_value": permutation_test(before, after, np.random.default_rng(seed)),
        "update": "PPO" if fresh_policy_update == "ppo" else "entropy-regularised PPO",
    }


def format_oracle_irl(result: dict[str, float]) -> str:
    """The markdown table of :func:`oracle_irl_experiment`."""
    return "\n".join(
        [
            "| learned reward vs the oracle (held-out probes) | untrained network | after IRL |",
            "|---|---:|---:|",
            f"| Spearman with oracle log-prob | {result['spearman_untrained']:.3f} | {result['spearman']:.3f} |",
            f"| AUC oracle vs uniformly random | {result['auc_untrained']:.3f} | {result['auc']:.3f} |",
            f"| AUC oracle vs random of the same lengths (oracle itself: {result['auc_matched_oracle']:.3f}) "
            f"| {result['auc_matched_untrained']:.3f} | {result['auc_matched']:.3f} |",
            "",
            f"| fresh policy, {result.get('update', 'PPO')} on the frozen learned reward | oracle NLL of samples (nats) |",
            "|---|---:|",
            f"| before PPO | {result['nll_before']:.1f} |",
            f"| after PPO | {result['nll_after']:.1f} |",
            f"| test references (the expert) | {result['nll_test_references']:.1f} |",
            f"| one-sided permutation test, p | {result['p_value']:.4f} |",
        ]
    )
