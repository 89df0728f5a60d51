"""Batched decoding for a KV-cached autoregressive model: greedy, sampling and beam search.

The decoders talk to the model only through :class:`IncrementalModel` (``start`` on the prompts, ``step``
with one token per row, ``reorder`` of the cached state), so they work for any policy that caches its
past. Every hot path is a batched tensor op over prompts and beams; the only Python loop is over time
steps, with one model call per step.

Conventions shared by all decoders:

* ``invalid_ids`` (pad, bos, unk, ...) get ``-inf`` logits at every step, so they are never generated.
* Log-probabilities are ``log_softmax`` of those masked logits (for sampling: of the *untempered*,
  untruncated distribution; temperature, top-k and top-p only change which token is drawn).
* A hypothesis stops at ``eos_id``. The returned tokens exclude the eos; ``lengths`` counts the generated
  tokens without it, ``finished`` says whether it ended with eos (``False``: it hit ``max_new_tokens``),
  and ``log_probs`` includes the eos token's log-probability when finished.
* Rows that have finished keep being fed ``eos_id`` (a harmless id the model knows) while other rows
  go on; their outputs are ignored. Decoding stops early once every row is done.
* Outputs are right-padded with ``pad_id`` to width ``max_new_tokens`` (a fixed width, so results of
  different batches stack; trim with ``tokens[..., : lengths.max()]``).
* Everything is created on the device of ``prompt_ids``.

Length penalty (beam search ranking, :func:`length_normalised_score`) is the GNMT one (Wu et al., 2016)::

    score = log_prob / ((5 + length) / 6) ** alpha

with ``alpha = length_penalty`` (``0``: plain log-probability) and ``length`` the number of generated
tokens *including* the eos for finished hypotheses (the eos is a real, scored decision of the model) and
the number of generated tokens for unfinished ones. The default alpha, :data:`DEFAULT_LENGTH_PENALTY` = 0.6,
is GNMT's (Wu et al. found alpha in 0.6-0.7 best); :func:`beam_search`,
``agents.generate.decode`` / ``decode_ids`` and ``agents.evaluation.evaluate`` all default to it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from agents.sampling import KeyedSampler, seed_from_generator

__all__ = [
    "DEFAULT_LENGTH_PENALTY",
    "DecodeOutput",
    "IncrementalModel",
    "beam_search",
    "greedy_decode",
    "length_normalised_score",
    "sample_decode",
]

#: GNMT length-penalty exponent alpha used by every beam-search entry point unless one is given (one
#: default, so ``decode``, ``evaluate`` and ``beam_search`` rank the same hypotheses first).
DEFAULT_LENGTH_PENALTY = 0.6


@runtime_checkable
class IncrementalModel(Protocol):
    """What the decoders need from a model with a cache of its past (e.g. a transformer's KV cache)."""

    def start(self, prompt_ids: torch.Tensor, prompt_lengths: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """Encode the prompts.

        :param prompt_ids: int64 ``[batch, prompt_len]``, right-padded.
        :param prompt_lengths: int64 ``[batch]``, the number of real tokens of each prompt.
        :return: ``(logits, state)``: logits ``[batch, vocab]`` of the first new token, and the cache.
        """
        ...

    def step(self, state: Any, tokens: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """Feed one token per row.

        :param state: the cache returned by ``start`` / ``step`` / ``reorder``.
        :param tokens: int64 ``[batch]``.
        :return: ``(logits, state)``: logits ``[batch, vocab]`` of the next token, and the new cache.
        """
        ...

    def reorder(self, state: Any, index: torch.Tensor) -> Any:
        """Select / repeat rows of the cache (beam expansion and reordering).

        :param state: a cache of ``batch`` rows.
        :param index: int64 ``[new_batch]``, row ``i`` of the result is row ``index[i]`` of ``state``.
        :return: the cache for ``new_batch`` rows.
        """
        ...


@dataclass
class DecodeOutput:
    """Decoded hypotheses, ``n`` per prompt (``n = 1`` greedy, ``num_samples``, ``num_return``).

    :param tokens: int64 ``[batch, n, max_new_tokens]``, generated ids without the eos, right-padded with
        ``pad_id``.
    :param lengths: int64 ``[batch, n]``, number of generated tokens (eos excluded).
    :param finished: bool ``[batch, n]``, ``True`` when the hypothesis ended with eos, ``False`` when it hit
        ``max_new_tokens``.
    :param scores: float ``[batch, n]``, the ranking score: the length-penalised log-probability for beam
        search, the total log-probability (same as ``log_probs``) for greedy decoding and sampling.
    :param log_probs: float ``[batch, n]``, total log-probability (nats) of the generated tokens, including
        the eos when finished; no length penalty.
    """

    tokens: torch.Tensor
    lengths: torch.Tensor
    finished: torch.Tensor
    scores: torch.Tensor
    log_probs: torch.Tensor


def length_normalised_score(
    log_prob: torch.Tensor, length: torch.Tensor | int, length_penalty: float
) -> torch.Tensor:
    """GNMT length-normalised score ``log_prob / ((5 + length) / 6) ** length_penalty``.

    With ``length_penalty = 0`` the divisor is exactly 1, so the score is the plain log-probability; larger
    values favour longer hypotheses (their negative log-probability is divided by more).

    :param log_prob: float, any shape: total log-probability (nats) of each hypothesis; ``-inf`` stays
        ``-inf``.
    :param length: int, broadcastable to ``log_prob``: number of generated tokens, counting the eos for
        finished hypotheses.
    :param length_penalty: the exponent alpha (``0``: no penalty; GNMT uses values in ``[0.6, 1]``).
    :return: float, the broadcast shape of ``log_prob`` and ``length``.
    """
    length = torch.as_tensor(length, device=log_prob.device).to(log_prob.dtype)
    return log_prob / ((5.0 + length) / 6.0) ** length_penalty


# --------------------------------------------------------------------------------------------- helpers


def _check_common(prompt_ids: torch.Tensor, prompt_lengths: torch.Tensor, max_new_tokens: int) -> None:
    if prompt_ids.dim() != 2:
        raise ValueError(f"prompt_ids must be [batch, prompt_len], got shape {tuple(prompt_ids.shape)}")
    if tuple(prompt_lengths.shape) != (prompt_ids.shape[0],):
        raise ValueError(
            f"prompt_lengths must be [batch] = [{prompt_ids.shape[0]}], got shape {tuple(prompt_lengths.shape)}"
        )
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")


def _invalid_mask(
    invalid_ids: Sequence[int], eos_id: int, vocab_size: int, device: torch.device
) -> torch.Tensor:
    """Bool ``[vocab]``, ``True`` at the ids that must never be generated (validated against the vocab)."""
    ids = sorted({int(i) for i in invalid_ids})
    out_of_range = [i for i in ids if not 0 <= i < vocab_size]
    if out_of_range:
        raise ValueError(f"invalid_ids must lie in [0, {vocab_size}) (the model's vocab), got {out_of_range}")
    if len(ids) == vocab_size:
        raise ValueError(f"invalid_ids must leave at least one of the {vocab_size} ids allowed")
    if not 0 <= eos_id < vocab_size:
        raise ValueError(f"eos_id must lie in [0, {vocab_size}) (the model's vocab), got {eos_id}")
    mask = torch.zeros(vocab_size, dtype=torch.bool, device=device)
    mask[ids] = True
    return mask


def _masked_logits(logits: torch.Tensor, invalid: torch.Tensor) -> torch.Tensor:
    """``logits`` ``[rows, vocab]`` in at least float32 (half-precision log-softmax loses too much),
    with the invalid ids at ``-inf``."""
    dtype = torch.promote_types(logits.dtype, torch.float32)
    return logits.to(dtype).masked_fill(invalid, float("-inf"))


def _top_k_filter(logits: torch.Tensor, top_k: int | None) -> torch.Tensor:
    """Keep the ``top_k`` largest logits per row (ties with the k-th are kept), ``-inf`` elsewhere."""
    if top_k is None or top_k >= logits.shape[-1]:
        return logits
    kth = logits.topk(top_k, dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def _top_p_filter(logits: torch.Tensor, top_p: float | None) -> torch.Tensor:
    """Nucleus filter: keep the most likely ids until their probability mass reaches ``top_p``.

    An id is kept when the mass of the ids ranked strictly above it is ``< top_p``, so the most likely id
    always survives and the kept set is the smallest whose mass is ``>= top_p``.
    """
    if top_p is None or top_p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_above = probs.cumsum(dim=-1) - probs
    remove_sorted = mass_above >= top_p
    remove = torch.zeros_like(remove_sorted).scatter(-1, order, remove_sorted)  # back to vocab order
    return logits.masked_fill(remove, float("-inf"))


def _decode_rows(
    model: IncrementalModel,
    prompt_ids: torch.Tensor,
    prompt_lengths: torch.Tensor,
    *,
    rows_per_prompt: int,
    choose: Callable[[torch.Tensor, int], torch.Tensor],
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    invalid_ids: Sequence[int],
) -> DecodeOutput:
    """Decode ``rows_per_prompt`` independent rows per prompt; ``choose(masked logits [rows, vocab], step)``
    gives the next ids ``[rows]``. Shared by greedy decoding and sampling."""
    batch, device = prompt_ids.shape[0], prompt_ids.device
    logits, state = model.start(prompt_ids, prompt_lengths)
    invalid = _invalid_mask(invalid_ids, eos_id, logits.shape[-1], device)
    if rows_per_prompt > 1:
        # Encode each prompt once and copy its cache, rather than encoding repeated prompts.
        index = torch.arange(batch, device=device).repeat_interleave(rows_per_prompt)
        state = model.reorder(state, index)
        logits = logits.index_select(0, index)
    rows = batch * rows_per_prompt

    tokens = torch.full((rows, max_new_tokens), pad_id, dtype=torch.long, device=device)
    lengths = torch.zeros(rows, dtype=torch.long, device=device)
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    log_prob = torch.zeros(rows, dtype=torch.promote_types(logits.dtype, torch.float32), device=device)
    for t in range(max_new_tokens):
        masked = _masked_logits(logits, invalid)
        next_ids = choose(masked, t)
        token_log_prob = torch.log_softmax(masked, dim=-1).gather(1, next_ids[:, None]).squeeze(1)
        active = ~finished
        log_prob = log_prob + torch.where(active, token_log_prob, 0.0)
        ends = active & (next_ids == eos_id)
        emits = active & ~ends
        tokens[:, t] = torch.where(emits, next_ids, pad_id)
        lengths += emits.long()
        finished |= ends
        if t == max_new_tokens - 1 or bool(finished.all()):
            break
        logits, state = model.step(state, torch.where(finished, eos_id, next_ids))

    n = rows_per_prompt
    return DecodeOutput(
        tokens=tokens.view(batch, n, max_new_tokens),
        lengths=lengths.view(batch, n),
        finished=finished.view(batch, n),
        scores=log_prob.view(batch, n).clone(),
        log_probs=log_prob.view(batch, n),
    )


# ------------------------------------------------------------------------------------------- decoders


def greedy_decode(
    model: IncrementalModel,
    prompt_ids: torch.Tensor,
    prompt_lengths: torch.Tensor,
    *,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int = 0,
    invalid_ids: Sequence[int] = (),
) -> DecodeOutput:
    """Pick the most likely allowed token at every step (ties: the lowest id, as ``torch.argmax``).

    :param model: the :class:`IncrementalModel` to decode from.
    :param prompt_ids: int64 ``[batch, prompt_len]``, right-padded prompts.
    :param prompt_lengths: int64 ``[batch]``, real length of each prompt.
    :param max_new_tokens: most tokens generated per prompt, eos included (``>= 1``).
    :param eos_id: the id that ends a hypothesis.
    :param pad_id: fills the output after each hypothesis.
    :param invalid_ids: ids that are never generated.
    :return: a :class:`DecodeOutput` with ``n = 1``; ``scores`` equals ``log_probs``.
    """
    _check_common(prompt_ids, prompt_lengths, max_new_tokens)
    return _decode_rows(
        model,
        prompt_ids,
        prompt_lengths,
        rows_per_prompt=1,
        choose=lambda logits, step: logits.argmax(dim=-1),
        max_new_tokens=max_new_tokens,
        eos_id=eos_id,
        pad_id=pad_id,
        invalid_ids=invalid_ids,
    )


def sample_decode(
    model: IncrementalModel,
    prompt_ids: torch.Tensor,
    prompt_lengths: torch.Tensor,
    *,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int = 0,
    invalid_ids: Sequence[int] = (),
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    num_samples: int = 1,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    row_keys: torch.Tensor | None = None,
) -> DecodeOutput:
    """Ancestral sampling, ``num_samples`` independent samples per prompt.

    Draws with :mod:`agents.sampling`: sample ``j`` of prompt ``i`` takes at step ``t`` the uniform keyed
    by ``(seed, 0, row_keys[i] * num_samples + j, t)``, so a prompt's samples do not depend on the other
    prompts of the batch (give each prompt a stable key, e.g. its example index, to make them independent
    of batching too).

    The sampling distribution at each step is built from the masked logits in this order: divide by
    ``temperature``, keep the ``top_k`` best ids, then keep the nucleus of mass ``top_p`` of what is left.
    ``log_probs`` (and ``scores``) are nevertheless log-probabilities under the model's own masked
    distribution (temperature 1, no truncation), which is what RL and reranking need.

    :param model: the :class:`IncrementalModel` to decode from.
    :param prompt_ids: int64 ``[batch, prompt_len]``, right-padded prompts.
    :param prompt_lengths: int64 ``[batch]``, real length of each prompt.
    :param max_new_tokens: most tokens generated per sample, eos included (``>= 1``).
    :param eos_id: the id that ends a hypothesis.
    :param pad_id: fills the output after each hypothesis.
    :param invalid_ids: ids that are never generated.
    :param temperature: ``> 0``; below 1 sharpens, above 1 flattens (for temperature 0 use
        :func:`greedy_decode`).
    :param top_k: if given (``>= 1``), sample only among the ``top_k`` most likely ids.
    :param top_p: if given (in ``(0, 1]``), sample only from the smallest set of most likely ids whose
        probability mass reaches ``top_p``.
    :param num_samples: samples per prompt (``>= 1``).
    :param generator: where the seed comes from when ``seed`` is not given (one draw); with neither, from
        torch's global generator.
    :param seed: the sampling seed (reproducible samples).
    :param row_keys: int64 ``[batch]``, each prompt's key (default: its row, ``0 .. batch - 1``).
    :return: a :class:`DecodeOutput` with ``n = num_samples`` in drawing order (not sorted).
    """
    _check_common(prompt_ids, prompt_lengths, max_new_tokens)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature} (for temperature 0 use greedy_decode)")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 (or None), got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (or None), got {top_p}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")

    if seed is None:
        seed = seed_from_generator(generator if generator is not None else torch.default_generator)
    batch = prompt_ids.shape[0]
    if row_keys is None:
        row_keys = torch.arange(batch, device=prompt_ids.device)
    elif tuple(row_keys.shape) != (batch,):
        raise ValueError(f"row_keys must have shape [batch] = [{batch}], got {list(row_keys.shape)}")
    keys = row_keys.to(prompt_ids.device).long()[:, None] * num_samples + torch.arange(
        num_samples, device=prompt_ids.device
    )
    sampler = KeyedSampler(seed, 0, keys.reshape(-1), max_new_tokens)

    def choose(logits: torch.Tensor, step: int) -> torch.Tensor:
        return sampler.sample(_top_p_filter(_top_k_filter(logits / temperature, top_k), top_p), step)

    return _decode_rows(
        model,
        prompt_ids,
        prompt_lengths,
        rows_per_prompt=num_samples,
        choose=choose,
        max_new_tokens=max_new_tokens,
        eos_id=eos_id,
        pad_id=pad_id,
        invalid_ids=invalid_ids,
    )


def beam_search(
    model: IncrementalModel,
    prompt_ids: torch.Tensor,
    prompt_lengths: torch.Tensor,
    *,
    beam_size: int,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int = 0,
    invalid_ids: Sequence[int] = (),
    length_penalty: float = DEFAULT_LENGTH_PENALTY,
    num_return: int = 1,
) -> DecodeOutput:
    """Beam search with a pool of finished hypotheses, ranked by :func:`length_normalised_score`.

    Per prompt, ``beam_size`` live (unfinished) hypotheses are kept by cumulative log-probability. Each
    step scores all ``beam_size * vocab`` one-token extensions and takes the best ``2 * beam_size`` of
    them (at most ``beam_size`` of those end in eos, one per beam, so enough non-eos ones remain):

    * eos extensions ranked within the best ``beam_size`` move to the finished pool (an eos extension
      ranked lower would not have survived in the beam either). Finished hypotheses are never extended,
      so the pool only keeps the ``num_return`` best by length-normalised score;
    * the best ``beam_size`` non-eos extensions become the new live beams.

    Stopping is exact, never a heuristic: a prompt is done when none of its live beams can still beat the
    ``num_return``-th best finished hypothesis. A live beam of log-prob ``L <= 0`` and ``l`` tokens can only
    lose log-prob, and ends with a length in ``[l + 1, max_new_tokens]``, so its best reachable score is
    ``max(L / d(l + 1), L / d(max_new_tokens))`` with ``d`` the length-penalty divisor (monotone in the
    length). Hence the result is the same as running every prompt to ``max_new_tokens``; search stops
    when all prompts are done. The returned hypotheses are the best ``num_return`` of the finished pool
    and, for prompts that ran all ``max_new_tokens`` steps, the live beams (unfinished, of length
    ``max_new_tokens``).

    With ``length_penalty = 0`` and ``beam_size = 1`` this is exactly greedy decoding. With a positive
    ``length_penalty`` a single beam can do better than greedy: after greedy's eos the beam goes on with
    the runner-up token while a longer hypothesis may still win the length-normalised ranking (so the
    result's score is never below greedy's, but the hypothesis can differ).

    At the first step all beams of a prompt hold the same empty hypothesis; only one of them starts with
    log-probability 0 (the others at ``-inf``), so the first expansion yields distinct hypotheses.

    Ties: equal scores keep the earlier candidate (already-finished before newly finished, finished before
    live, better-ranked extension first); which of exactly tied extensions ``torch.topk`` selects is
    unspecified.

    If a prompt has fewer than ``num_return`` distinct hypotheses (tiny vocab or ``max_new_tokens``), the
    missing slots have score and log-probability ``-inf``, length 0, ``finished`` False and only
    ``pad_id`` tokens.

    :param model: the :class:`IncrementalModel` to decode from.
    :param prompt_ids: int64 ``[batch, prompt_len]``, right-padded prompts.
    :param prompt_lengths: int64 ``[batch]``, real length of each prompt.
    :param beam_size: live hypotheses per prompt (``>= 1``).
    :param max_new_tokens: most tokens generated per hypothesis, eos included (``>= 1``).
    :param eos_id: the id that ends a hypothesis.
    :param pad_id: fills the output after each hypothesis.
    :param invalid_ids: ids that are never generated.
    :param length_penalty: GNMT exponent alpha of :func:`length_normalised_score` (``0``: rank by
        log-probability; positive values favour longer hypotheses); default
        :data:`DEFAULT_LENGTH_PENALTY` (0.6).
    :param num_return: hypotheses returned per prompt, in ``[1, beam_size]``.
    :return: a :class:`DecodeOutput` with ``n = num_return``, best score first.
    """
    _check_common(prompt_ids, prompt_lengths, max_new_tokens)
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    if not 1 <= num_return <= beam_size:
        raise ValueError(f"num_return must be in [1, beam_size={beam_size}], got {num_return}")

    batch, device = prompt_ids.shape[0], prompt_ids.device
    k, n, steps = beam_size, num_return, max_new_tokens
    neg_inf = float("-inf")

    logits, state = model.start(prompt_ids, prompt_lengths)
    vocab = logits.shape[-1]
    invalid = _invalid_mask(invalid_ids, eos_id, vocab, device)
    float_dtype = torch.promote_types(logits.dtype, torch.float32)
    expand = torch.arange(batch, device=device).repeat_interleave(k)  # prompt b -> rows b*k .. b*k+k-1
    state = model.reorder(state, expand)
    logits = logits.index_select(0, expand)
    row_offset = torch.arange(batch, device=device)[:, None] * k  # [batch, 1], first row of each prompt

    # Live beams: cumulative log-prob [batch, k] and tokens [batch, k, steps]; only beam 0 starts alive.
    beam_log_prob = torch.full((batch, k), neg_inf, dtype=float_dtype, device=device)
    beam_log_prob[:, 0] = 0.0
    beam_tokens = torch.full((batch, k, steps), pad_id, dtype=torch.long, device=device)
    # Finished pool [batch, n], best first; empty slots have score -inf. Lengths exclude the eos.
    pool_tokens = torch.full((batch, n, steps), pad_id, dtype=torch.long, device=device)
    pool_lengths = torch.zeros((batch, n), dtype=torch.long, device=device)
    pool_log_prob = torch.full((batch, n), neg_inf, dtype=float_dtype, device=device)
    pool_score = torch.full((batch, n), neg_inf, dtype=float_dtype, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    num_candidates = min(2 * k, k * vocab)

    for t in range(steps):
        log_probs = torch.log_softmax(_masked_logits(logits, invalid), dim=-1).view(batch, k, vocab)
        candidate_log_prob = (beam_log_prob[:, :, None] + log_probs).view(batch, k * vocab)
        candidate_log_prob = candidate_log_prob.masked_fill(done[:, None], neg_inf)  # done: no new ones
        top_log_prob, top_index = candidate_log_prob.topk(num_candidates, dim=1)  # [batch, 2k], best first
        top_parent = top_index // vocab
        top_token = top_index % vocab
        top_is_eos = top_token == eos_id

        # Finished pool: merge the eos extensions ranked within the best k, keep the best n. The pool
        # goes first so that on equal scores the older hypothesis stays (a stable sort).
        new_log_prob = top_log_prob[:, :k].masked_fill(~top_is_eos[:, :k], neg_inf)
        new_tokens = beam_tokens.gather(1, top_parent[:, :k, None].expand(-1, -1, steps))
        new_lengths = torch.full((batch, k), t, dtype=torch.long, device=device)
        merged_log_prob = torch.cat([pool_log_prob, new_log_prob], dim=1)
        merged_lengths = torch.cat([pool_lengths, new_lengths], dim=1)
        merged_score = length_normalised_score(merged_log_prob, merged_lengths + 1, length_penalty)
        keep = merged_score.sort(dim=1, descending=True, stable=True).indices[:, :n]
        pool_log_prob = merged_log_prob.gather(1, keep)
        pool_lengths = merged_lengths.gather(1, keep)
        pool_score = merged_score.gather(1, keep)
        merged_tokens = torch.cat([pool_tokens, new_tokens], dim=1)
        pool_tokens = merged_tokens.gather(1, keep[:, :, None].expand(-1, -1, steps))

        # Live beams: the best k non-eos extensions, in rank order (a stable sort puts non-eos first).
        live = torch.sort(top_is_eos.to(torch.uint8), dim=1, stable=True).indices[:, :k]
        parent = top_parent.gather(1, live)
        token = top_token.gather(1, live)
        # Only with fewer than k non-eos candidates (tiny vocab) can an eos slip in here: kill it.
        beam_log_prob = top_log_prob.gather(1, live).masked_fill(token == eos_id, neg_inf)
        beam_tokens = beam_tokens.gather(1, parent[:, :, None].expand(-1, -1, steps))
        beam_tokens[:, :, t] = token
        if t == steps - 1:
            break

        # Best score any live beam (t + 1 tokens now) can still reach; dead beams (-inf) reach -inf.
        reachable = torch.maximum(
            length_normalised_score(beam_log_prob, t + 2, length_penalty),
            length_normalised_score(beam_log_prob, steps, length_penalty),
        )
        done |= reachable.max(dim=1).values <= pool_score[:, -1]
        if bool(done.all()):
            break
        state = model.reorder(state, (row_offset + parent).view(-1))
        alive = (beam_log_prob > neg_inf) & ~done[:, None]
        logits, state = model.step(state, torch.where(alive, token, eos_id).view(-1))

    # Final ranking over the finished pool and, for prompts that ran every step, the live beams.
    live_score = length_normalised_score(beam_log_prob, steps, length_penalty).masked_fill(
        done[:, None], neg_inf
    )
    all_score = torch.cat([pool_score, live_score], dim=1)  # [batch, n + k], pool first: wins ties
    best = all_score.sort(dim=1, descending=True, stable=True).indices[:, :n]  # [batch, n]
    score = all_score.gather(1, best)
    empty = ~(score > neg_inf)
    all_tokens = torch.cat([pool_tokens, beam_tokens], dim=1)
    tokens = all_tokens.gather(1, best[:, :, None].expand(-1, -1, steps)).masked_fill(
        empty[:, :, None], pad_id
    )
    all_lengths = torch.cat([pool_lengths, torch.full_like(beam_tokens[:, :, 0], steps)], dim=1)
    all_finished = (torch.arange(n + k, device=device) < n).expand(batch, -1)  # pool slots come first
    all_log_prob = torch.cat([pool_log_prob, beam_log_prob], dim=1)
    return DecodeOutput(
        tokens=tokens,
        lengths=all_lengths.gather(1, best).masked_fill(empty, 0),
        finished=all_finished.gather(1, best) & ~empty,
        scores=score,
        log_probs=all_log_prob.gather(1, best).masked_fill(empty, neg_inf),
    )
