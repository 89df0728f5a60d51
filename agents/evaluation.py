"""``evaluate``: decode a split with a policy and report BLEU, chrF, exact match, env reward and more.

Three overlap scores, because corpus BLEU alone misleads on short outputs: it needs 4-gram matches, so a
corpus of one- to three-token outputs scores 0 even when every output is exactly right. The mean sentence
BLEU (what the ``bleu`` reward pays, with effective order) and chrF (character n-grams) stay readable there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from agents.decoding import DEFAULT_LENGTH_PENALTY, DecodeOutput
from agents.generate import decode_ids
from agents.policies.base import Policy, check_policy, env_setup_of
from lmrl_gym.env_setup import EnvSetup, encoded_texts
from lmrl_gym.rewards import KneserNeyLM
from lmrl_gym.rewards.bleu import BleuStatistics, bleu_from_statistics, bleu_signature, bleu_statistics
from lmrl_gym.rewards.sequence_rewards import exact_match
from lmrl_gym.rewards.text_bleu import corpus_bleu_texts, sentence_bleu_texts
from lmrl_gym.vector_env import TextGenVectorEnv

METRICS = (
    "bleu",
    "mean_sentence_bleu",
    "chrf",
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


def corpus_chrf(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[float, str]:
    """Corpus chrF of texts against their references, by sacreBLEU's ``CHRF()`` with its defaults
    (character n-grams of order 1-6, no word n-grams, beta 2, whitespace ignored, case kept).

    :param hypotheses: N output texts.
    :param references: N lists of reference texts, one or more each (the number may differ).
    :return: ``(score, signature)``: chrF on the 0-100 scale and sacreBLEU's signature of the metric,
        e.g. ``"nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0"``.
    :raises ValueError: if the lengths differ or an output has no reference.
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    if any(len(refs) == 0 for refs in references):
        raise ValueError("every hypothesis needs at least one reference")
    # Imported here: only evaluation needs sacreBLEU, and ``import agents`` stays as cheap as it was.
    from sacrebleu.metrics import CHRF

    # sacreBLEU takes reference streams (the k-th reference of every segment); None marks a missing one.
    num_refs = max((len(refs) for refs in references), default=0)
    streams = [[refs[k] if k < len(refs) else None for refs in references] for k in range(num_refs)]
    metric = CHRF()
    score = metric.corpus_score(list(hypotheses), streams)
    return float(score.score), str(metric.get_signature())


def evaluation_lm(setup: EnvSetup, order: int = 3) -> KneserNeyLM:
    """The Kneser-Ney model of the task's training references used for ``lm_score``, in the env's token ids.

    Cached on the task per (tokenizer, order): one task may be spoken by several tokenizers (its word
    tokenizer and a Hugging Face one), and a model fitted on one's ids scores nonsense on the other's."""
    cache = setup.task.__dict__.setdefault("_lmrl_evaluation_lm", {})
    tok = setup.tokenizer
    key = (getattr(tok, "fingerprint", "word"), order)  # the word tokenizer is the task's own: one per task
    if key not in cache:
        _, references = encoded_texts(setup.task, tok)["train"]
        sequences = [ids for refs in references for ids in refs]
        cache[key] = KneserNeyLM(order=order).fit(sequences, tok.vocab_size, tok.bos_id, tok.eos_id)
    return cache[key]


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
    # Rows whose episode is over still take a step (their env has reset; the reward is ignored): give them
    # eos, not the decoder's pad, which lies outside a Hugging Face env's action space.
    over = torch.arange(actions.shape[1])[None, :] >= episode_length[:, None]
    actions = actions.masked_fill(over, eos_id)
    returns = np.zeros(len(rows))
    for t in range(int(episode_length.max())):
        _, rewards, *_ = venv.step(actions[:, t].numpy())
        returns += np.where(t < episode_length.numpy(), rewards, 0.0)
    return returns


@torch.no_grad()
def evaluate(
    policy: Policy,
    env: Any,
    split: str = "test",
    method: str = "greedy",
    beam_size: int = 4,
    length_penalty: float = DEFAULT_LENGTH_PENALTY,
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
        exp smoothing, effective order off; signature in ``bleu_signature``; 0 whenever no output has four
        tokens), ``mean_sentence_bleu`` (mean over outputs of sentence BLEU 0-100 on token ids with exp
        smoothing and effective order: the number the env's default ``bleu`` reward pays, times 100;
        signature in ``sentence_bleu_signature``), ``chrf`` (corpus chrF 0-100 of the decoded texts against
        the task's reference texts, sacreBLEU's ``CHRF()`` defaults; signature in ``chrf_signature``, see
        :func:`corpus_chrf`), ``exact_match`` (fraction),
        ``mean_reward`` (mean episode return the environment pays), ``lm_score`` (mean log-probability
        per output, eos included, under a trigram Kneser-Ney model of the training references),
        ``distinct_1`` / ``distinct_2``, ``mean_length`` (tokens, eos excluded), ``count``, plus
        ``method`` and ``split``. On a Hugging Face tokenizer both BLEUs are computed on sacreBLEU's 13a
        words of the decoded texts (as its ``bleu`` reward pays) and exact match compares texts. On
        prompt-only data (no references) the reference metrics (BLEU, chrF, exact match, LM score) are NaN,
        shown as ``n/a`` by :func:`format_evaluation`.
    """
    check_policy(policy)
    setup = env_setup_of(env)
    policy.check_env(env)
    data = setup.data if split == setup.split else EnvSetup(split=split, **setup.kwargs).data
    count = len(data) if max_examples is None else min(max_examples, len(data))
    tok = policy.tokenizer
    totals: dict[str, Any] = {"stats": [], "exact": 0.0, "reward": 0.0, "lm": 0.0}
    all_tokens, all_lengths = [], []
    # Prompt-only data (no references): the reference metrics do not exist; the reward still does.
    has_references = setup.task.has_references
    lm = evaluation_lm(setup) if has_references else None
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
            seed=seed,
            row_keys=rows.to(policy.device),  # an example's samples do not depend on batch_size
        )
        tokens, lengths = out.tokens[:, 0], out.lengths[:, 0]
        if has_references and not setup.is_hf:
            refs = torch.as_tensor(data.references[rows.numpy()], device=policy.device)
            ref_len = torch.as_tensor(data.reference_lengths[rows.numpy()], device=policy.device)
            ref_mask = torch.as_tensor(data.reference_mask[rows.numpy()], device=policy.device)
            # Per output, not summed: the corpus score sums them, the sentence scores need them one by one.
            totals["stats"].append(bleu_statistics(tokens, lengths, refs, ref_len, ref_mask))
            totals["exact"] += float(exact_match(tokens, lengths, refs, ref_len, ref_mask).sum())
        totals["reward"] += float(replay_rewards(setup, split, rows, out, tok.eos_id).sum())
        if lm is not None:
            totals["lm"] += float(lm.sequence_logprob(tokens.cpu().numpy(), lengths.cpu().numpy()).sum())
        all_tokens.append(tokens.cpu())
        all_lengths.append(lengths.cpu())
    policy.train(was_training)
    width = max(t.shape[1] for t in all_tokens)
    tokens = torch.cat(
        [torch.nn.functional.pad(t, (0, width - t.shape[1]), value=tok.pad_id) for t in all_tokens]
    )
    lengths = torch.cat(all_lengths)
    texts = [tok.decode(t[:n].tolist()) for t, n in zip(tokens, lengths.tolist(), strict=True)]
    references = [data.examples[i].references for i in range(count)]
    nan = float("nan")
    bleu = sentence_mean = chrf = exact = nan
    chrf_signature = "n/a (no references)"
    bleu_words = "ids"
    if has_references:
        # chrF is defined on characters, so it scores the decoded texts against the task's own reference
        # texts (what sacreBLEU would be given outside this library), not the reference ids.
        chrf, chrf_signature = corpus_chrf(texts, references)
        if setup.is_hf:
            # Subword ids are no words: BLEU on sacreBLEU's 13a words of the decoded text, as the env's
            # bleu reward pays on a Hugging Face tokenizer.
            bleu_words = "13a"
            bleu = corpus_bleu_texts(texts, references)
            sentence_mean = float(sentence_bleu_texts(texts, references).mean())
            exact = sum(
                text in {tok.decode(tok.encode(r)) for r in refs}
                for text, refs in zip(texts, references, strict=True)
            )
        else:
            stats = BleuStatistics(*(torch.cat(field) for field in zip(*totals["stats"], strict=True)))
            bleu = float(bleu_from_statistics(stats.sum(), "exp", None, effective_order=False)[0])
            sentence_mean = float(bleu_from_statistics(stats, "exp", None, effective_order=True).mean())
            exact = totals["exact"]
        exact /= count
    results = {
        "bleu": bleu,
        "mean_sentence_bleu": sentence_mean,
        "chrf": chrf,
        "exact_match": exact,
        "mean_reward": totals["reward"] / count,
        "lm_score": totals["lm"] / count if lm is not None else nan,
        "distinct_1": distinct_n(tokens, lengths, 1, policy.vocab_size),
        "distinct_2": distinct_n(tokens, lengths, 2, policy.vocab_size),
        "mean_length": float(lengths.float().mean()),
        "count": count,
        "method": method if method != "beam" else f"beam{beam_size}",
        "split": split,
        "bleu_signature": bleu_signature("exp", None, False, tokens=bleu_words) + " corpus",
        "sentence_bleu_signature": bleu_signature("exp", None, True, tokens=bleu_words)
        + " sentence, mean over outputs",
        "chrf_signature": chrf_signature,
    }
    if print_table:
        print(format_evaluation(results))
    return results


def format_evaluation(*results: dict[str, Any], names: list[str] | None = None) -> str:
    """A markdown table of one or more :func:`evaluate` results, with the BLEU and chrF signatures below it."""
    names = names or [f"{r['method']} ({r['split']})" for r in results]
    header = "| metric | " + " | ".join(names) + " |"
    lines = [header, "|---|" + "---:|" * len(results)]
    for metric in METRICS:
        cells = [
            f"{r[metric]:.0f}"
            if metric == "count"
            else "n/a"
            if r[metric] != r[metric]
            else f"{r[metric]:.4g}"
            for r in results
        ]
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    lines.append(f"\nbleu: {results[0]['bleu_signature']}")
    lines.append(f"mean_sentence_bleu: {results[0]['sentence_bleu_signature']}")
    lines.append(f"chrf: sacreBLEU chrF2 {results[0]['chrf_signature']}, decoded texts vs reference texts")
    return "\n".join(lines)
