"""``evaluate``: decode a split with a policy and report corpus BLEU, exact match, env reward and more."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from agents.decoding import DecodeOutput
from agents.generate import decode_ids
from agents.policy import TransformerPolicy, env_setup_of
from lmrl_gym.env_setup import EnvSetup
from lmrl_gym.rewards import KneserNeyLM
from lmrl_gym.rewards.bleu import BleuStatistics, bleu_from_statistics, bleu_signature, bleu_statistics
from lmrl_gym.rewards.sequence_rewards import exact_match
from lmrl_gym.vector_env import TextGenVectorEnv

METRICS = (
    "bleu",
    "exact_match",
    "mean_reward",
    "lm_score",
    "distinct_1",
    "distinct_2",
    "mean_length",
    "count",
)


def distinct_n(tokens: torch.Tensor, lengths: torch.Tensor, n: int, vocab_size: int) -> float:
    """Distinct-n (Li et al. 2016): distinct n-grams / all n-grams over the whole set of outputs.

    :param tokens: int ``[B, T]`` generated ids; :param lengths: ``[B]``.
    """
    t = tokens.shape[1]
    if t < n:
        return 0.0
    keys = torch.zeros(tokens.shape[0], t - n + 1, dtype=torch.long, device=tokens.device)
    for k in range(n):  # an n-gram as one integer in base vocab_size
        keys = keys * vocab_size + tokens[:, k : t - n + 1 + k].long()
    inside = torch.arange(t - n + 1, device=tokens.device)[None, :] < (lengths[:, None] - n + 1)
    total = int(inside.sum())
    return float(torch.unique(keys[inside]).numel() / total) if total else 0.0


def evaluation_lm(setup: EnvSetup, order: int = 3) -> KneserNeyLM:
    """The Kneser-Ney model of the task's training references used for ``lm_score`` (cached on the task)."""
    cache = setup.task.__dict__.setdefault("_lmrl_evaluation_lm", {})
    if order not in cache:
        tok = setup.tokenizer
        sequences = [tok.encode(r) for ex in setup.task.examples("train") for r in ex.references]
        cache[order] = KneserNeyLM(order=order).fit(sequences, tok.vocab_size, tok.bos_id, tok.eos_id)
    return cache[order]


def replay_rewards(
    setup: EnvSetup, split: str, rows: torch.Tensor, out: DecodeOutput, eos_id: int
) -> np.ndarray:
    """Episode returns the environment pays for these outputs: the tokens (and eos when finished) are
    stepped through a :class:`TextGenVectorEnv` of the split, one batched step per position."""
    venv = TextGenVectorEnv(num_envs=len(rows), split=split, info_text=False, **setup.kwargs)
    venv.reset(options={"index": rows.cpu().numpy()})
    tokens, lengths, finished = out.tokens[:, 0].cpu(), out.lengths[:, 0].cpu(), out.finished[:, 0].cpu()
    episode_length = lengths + finished.long()
    actions = torch.cat([tokens, torch.full((len(rows), 1), eos_id)], dim=1)
    actions[torch.arange(len(rows)), lengths] = eos_id  # the eos of finished episodes (ignored otherwise)
    returns = np.zeros(len(rows))
    for t in range(int(episode_length.max())):
        _, rewards, *_ = venv.step(actions[:, t].numpy())
        returns += np.where(t < episode_length.numpy(), rewards, 0.0)
    return returns


@torch.no_grad()
def evaluate(
    policy: TransformerPolicy,
    env: Any,
    split: str = "test",
    method: str = "greedy",
    beam_size: int = 4,
    length_penalty: float = 0.6,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    batch_size: int = 256,
    max_examples: int | None = None,
    seed: int = 0,
    print_table: bool = False,
) -> dict[str, Any]:
    """Decode every example of ``split`` and score the outputs.

    :param method: ``"greedy"``, ``"sample"`` (temperature / top-k / top-p) or ``"beam"``.
    :param max_examples: evaluate only the first N examples of the split.
    :return: ``bleu`` (corpus BLEU 0-100 against all references of each example, sacreBLEU's corpus settings:
        exp smoothing, effective order off; signature in ``bleu_signature``), ``exact_match`` (fraction),
        ``mean_reward`` (mean episode return the environment pays), ``lm_score`` (mean log-probability
        per output, eos included, under a trigram Kneser-Ney model of the training references),
        ``distinct_1`` / ``distinct_2``, ``mean_length`` (tokens, eos excluded), ``count``, plus
        ``method`` and ``split``.
    """
    setup = env_setup_of(env)
    policy.check_env(env)
    data = setup.data if split == setup.split else EnvSetup(split=split, **setup.kwargs).data
    count = len(data) if max_examples is None else min(max_examples, len(data))
    tok = policy.tokenizer
    generator = torch.Generator(device=policy.device).manual_seed(seed)
    totals: dict[str, Any] = {"stats": [], "exact": 0.0, "reward": 0.0, "lm": 0.0}
    all_tokens, all_lengths = [], []
    lm = evaluation_lm(setup)
    was_training = policy.training
    policy.eval()
    for start in range(0, count, batch_size):
        rows = torch.arange(start, min(start + batch_size, count))
        prompts = torch.as_tensor(data.prompts[rows.numpy()], dtype=torch.long, device=policy.device)
        out = decode_ids(
            policy,
            prompts,
            method=method,
            beam_size=beam_size,
            length_penalty=length_penalty,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            generator=generator,
        )
        tokens, lengths = out.tokens[:, 0], out.lengths[:, 0]
        refs = torch.as_tensor(data.references[rows.numpy()], device=policy.device)
        ref_len = torch.as_tensor(data.reference_lengths[rows.numpy()], device=policy.device)
        ref_mask = torch.as_tensor(data.reference_mask[rows.numpy()], device=policy.device)
        totals["stats"].append(bleu_statistics(tokens, lengths, refs, ref_len, ref_mask).sum())
        totals["exact"] += float(exact_match(tokens, lengths, refs, ref_len, ref_mask).sum())
        totals["reward"] += float(replay_rewards(setup, split, rows, out, tok.eos_id).sum())
        totals["lm"] += float(lm.sequence_logprob(tokens.cpu().numpy(), lengths.cpu().numpy()).sum())
        all_tokens.append(tokens.cpu())
        all_lengths.append(lengths.cpu())
    policy.train(was_training)
    width = max(t.shape[1] for t in all_tokens)
    tokens = torch.cat(
        [torch.nn.functional.pad(t, (0, width - t.shape[1]), value=tok.pad_id) for t in all_tokens]
    )
    lengths = torch.cat(all_lengths)
    corpus_stats = BleuStatistics(*(torch.cat(field) for field in zip(*totals["stats"], strict=True))).sum()
    results = {
        "bleu": float(bleu_from_statistics(corpus_stats, "exp", None, effective_order=False)[0]),
        "exact_match": totals["exact"] / count,
        "mean_reward": totals["reward"] / count,
        "lm_score": totals["lm"] / count,
        "distinct_1": distinct_n(tokens, lengths, 1, tok.vocab_size),
        "distinct_2": distinct_n(tokens, lengths, 2, tok.vocab_size),
        "mean_length": float(lengths.float().mean()),
        "count": count,
        "method": method if method != "beam" else f"beam{beam_size}",
        "split": split,
        "bleu_signature": bleu_signature("exp", None, False) + " corpus",
    }
    if print_table:
        print(format_evaluation(results))
    return results


def format_evaluation(*results: dict[str, Any], names: list[str] | None = None) -> str:
    """A markdown table of one or more :func:`evaluate` results, with the BLEU signature below it."""
    names = names or [f"{r['method']} ({r['split']})" for r in results]
    header = "| metric | " + " | ".join(names) + " |"
    lines = [header, "|---|" + "---:|" * len(results)]
    for metric in METRICS:
        cells = [f"{r[metric]:.0f}" if metric == "count" else f"{r[metric]:.4g}" for r in results]
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    lines.append(f"\nBLEU: {results[0]['bleu_signature']}")
    return "\n".join(lines)
