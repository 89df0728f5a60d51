"""``decode``: generate text for prompts with any :class:`~agents.policies.base.Policy`, by greedy search,
sampling or beam search."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from agents.decoding import DEFAULT_LENGTH_PENALTY, DecodeOutput, beam_search, greedy_decode, sample_decode
from agents.policies.base import Policy

METHODS = ("greedy", "sample", "beam")


def decode_ids(
    policy: Policy,
    prompt_ids: torch.Tensor,
    method: str = "greedy",
    beam_size: int = 4,
    length_penalty: float = DEFAULT_LENGTH_PENALTY,
    num_return: int = 1,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    max_new_tokens: int | None = None,
    seed: int | None = None,
    row_keys: torch.Tensor | None = None,
) -> DecodeOutput:
    """Decode right-padded prompt ids ``[B, P]``; see :mod:`agents.decoding` for the output layout.

    ``generator``, ``seed`` and ``row_keys`` are :func:`~agents.decoding.sample_decode`'s (sampling only).

    :param max_new_tokens: default: the policy's (the env's width it was built for or checked against).
    """
    if method not in METHODS:
        raise ValueError(f"unknown decoding method {method!r}; valid: {list(METHODS)}")
    max_new_tokens = max_new_tokens or policy.max_new_tokens
    if max_new_tokens is None:
        raise ValueError(
            "max_new_tokens is needed: this policy was never bound to an env (e.g. HFPolicy.from_pretrained "
            "without env=), so it has no default; pass max_new_tokens=... or check it against an env"
        )
    tok = policy.tokenizer
    prompt_ids = torch.as_tensor(prompt_ids, device=policy.device).long()
    common = {
        "max_new_tokens": max_new_tokens,
        "eos_id": tok.eos_id,
        "pad_id": tok.pad_id,
        "invalid_ids": policy.invalid_ids,
    }
    lengths = policy.prompt_lengths(prompt_ids)
    # Decoded as the rollouts sample: dropout off (a pretrained GPT-2 has 0.1), the caller's mode restored.
    was_training = policy.training
    policy.eval()
    try:
        return _decode(policy, prompt_ids, lengths, method, common, beam_size, length_penalty, num_return,
                       temperature, top_k, top_p, generator, seed, row_keys)  # fmt: skip
    finally:
        policy.train(was_training)


def _decode(
    policy, prompt_ids, lengths, method, common, beam_size, length_penalty, num_return, temperature, top_k,
    top_p, generator, seed, row_keys,
) -> DecodeOutput:  # fmt: skip
    with torch.no_grad():
        if method == "greedy":
            return greedy_decode(policy, prompt_ids, lengths, **common)
        if method == "sample":
            return sample_decode(
                policy,
                prompt_ids,
                lengths,
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                num_samples=num_return,
                generator=generator,
                seed=seed,
                row_keys=row_keys,
                **common,
            )
        return beam_search(
            policy,
            prompt_ids,
            lengths,
            beam_size=beam_size,
            length_penalty=length_penalty,
            num_return=num_return,
            **common,
        )


def encode_prompts(policy: Policy, prompts: Sequence[str]) -> torch.Tensor:
    """Right-padded prompt ids ``[B, P]``: ``P`` is the policy's prompt width (longer prompts keep their first
    tokens), or the longest prompt for a policy never bound to an env (no width)."""
    tok = policy.tokenizer
    encoded = [tok.encode(prompt) for prompt in prompts]
    width = policy.max_prompt_tokens
    if width is None:
        width = max((len(e) for e in encoded), default=1)
    ids = torch.full((len(prompts), width), tok.pad_id, dtype=torch.long)
    for i, e in enumerate(encoded):
        ids[i, : len(e[:width])] = torch.tensor(e[:width], dtype=torch.long)
    return ids


def decode(
    policy: Policy,
    prompts: str | Sequence[str],
    method: str = "greedy",
    beam_size: int = 4,
    length_penalty: float = DEFAULT_LENGTH_PENALTY,
    num_return: int = 1,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    max_new_tokens: int | None = None,
) -> list[str] | list[list[tuple[str, float]]]:
    """Generate a continuation of each prompt.

    :param prompts: one prompt or a list of prompts (text, tokenized with the policy's tokenizer).
    :param method: ``"greedy"``, ``"sample"`` or ``"beam"``.
    :param length_penalty: beam search ranks hypotheses by ``log_prob / ((5 + length) / 6) ** alpha``
        (GNMT, Wu et al. 2016, who found alpha in 0.6-0.7 best); 0 = no penalty; default
        :data:`agents.decoding.DEFAULT_LENGTH_PENALTY` (0.6).
    :param num_return: with ``num_return > 1`` (beam: the n best; sample: n samples) each prompt gets a list
        of ``(text, score)`` pairs, best first for beam search.
    :param max_new_tokens: most tokens to generate (default: the policy's width; needed for a policy never
        bound to an env, e.g. ``HFPolicy.from_pretrained(name)`` without ``env=``).
    :return: one text per prompt, or lists of ``(text, score)`` when ``num_return > 1``.
    """
    single = isinstance(prompts, str)
    prompt_list = [prompts] if single else list(prompts)
    out = decode_ids(
        policy,
        encode_prompts(policy, prompt_list),
        method=method,
        beam_size=beam_size,
        length_penalty=length_penalty,
        num_return=num_return,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        max_new_tokens=max_new_tokens,
    )
    tok = policy.tokenizer
    tokens, lengths, scores = out.tokens.cpu(), out.lengths.cpu(), out.scores.cpu()
    texts = [
        [
            (tok.decode(tokens[b, k, : lengths[b, k]].tolist()), float(scores[b, k]))
            for k in range(tokens.shape[1])
        ]
        for b in range(tokens.shape[0])
    ]
    result = [t[0][0] for t in texts] if num_return == 1 else texts
    return result[0] if single else result
