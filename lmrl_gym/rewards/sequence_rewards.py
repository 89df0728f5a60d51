"""Sequence rewards on token ids: BLEU and exact match, batched over episodes."""

from __future__ import annotations

import torch

from lmrl_gym.rewards.base import Reward, RewardBatch, RewardContext
from lmrl_gym.rewards.bleu import SMOOTH_METHODS, batched_sentence_bleu, bleu_signature


class BLEUReward(Reward):
    """Sentence BLEU of the generated ids against the example's references, scaled to [0, 1].

    The same number as sacreBLEU's ``sentence_bleu`` on the same tokens (divided by 100). Defaults follow
    sacreBLEU's sentence level: exponential smoothing, effective order on. On a Hugging Face (subword)
    tokenizer it binds to :class:`~lmrl_gym.rewards.text_bleu.TextBLEUReward`: the decoded text scored on
    sacreBLEU's own 13a words, since subword ids are not words.

    :param smooth_method: ``"exp"``, ``"floor"``, ``"add-k"`` or ``"none"``.
    :param smooth_value: the floor / k value (``None``: sacreBLEU's default, 0.1 / 1).
    :param effective_order: ignore n-gram orders longer than the hypothesis.
    """

    name = "bleu"
    per_token = False
    needs_references = True

    def __init__(
        self, smooth_method: str = "exp", smooth_value: float | None = None, effective_order: bool = True
    ) -> None:
        if smooth_method not in SMOOTH_METHODS:
            raise ValueError(f"unknown smooth_method {smooth_method!r}; valid: {list(SMOOTH_METHODS)}")
        self.smooth_method = smooth_method
        self.smooth_value = smooth_value
        self.effective_order = effective_order

    @property
    def signature(self) -> str:
        return bleu_signature(self.smooth_method, self.smooth_value, self.effective_order)

    def bind(self, context: RewardContext) -> Reward:
        if getattr(context.tokenizer, "level", "word") == "subword":
            from lmrl_gym.rewards.text_bleu import TextBLEUReward

            return TextBLEUReward(self.smooth_method, self.smooth_value, self.effective_order)
        return self

    def __call__(self, batch: RewardBatch) -> torch.Tensor:
        scores = batched_sentence_bleu(
            batch.generated,
            batch.lengths,
            batch.references,
            batch.reference_lengths,
            ref_mask=batch.reference_mask,
            smooth_method=self.smooth_method,
            smooth_value=self.smooth_value,
            effective_order=self.effective_order,
            check_values=False,  # the environment built these tensors; skip the data-reading checks
        )
        return scores / 100.0


class ExactMatchReward(Reward):
    """1.0 when the generated ids equal one of the references exactly, else 0.0.

    On a Hugging Face (subword) tokenizer it binds to :class:`TextExactMatchReward`: one text has several
    id sequences there, and any of them that decodes to a reference matches.
    """

    name = "exact_match"
    per_token = False
    needs_references = True

    def bind(self, context: RewardContext) -> Reward:
        if getattr(context.tokenizer, "level", "word") == "subword":
            return TextExactMatchReward(context.tokenizer)
        return self

    def __call__(self, batch: RewardBatch) -> torch.Tensor:
        return exact_match(
            batch.generated, batch.lengths, batch.references, batch.reference_lengths, batch.reference_mask
        ).double()


class TextExactMatchReward(Reward):
    """1.0 when the decoded text equals one of the references as the tokenizer writes it
    (``decode(encode(reference))``: a tokenizer that normalises text, as SentencePiece does, would otherwise
    never reproduce a reference with, say, a double space), else 0.0."""

    name = "exact_match"
    per_token = False
    needs_references = True

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self._written: dict[str, str] = {}  # reference -> as the tokenizer writes it; bounded by the data

    def _as_written(self, reference: str) -> str:
        if reference not in self._written:
            self._written[reference] = self.tokenizer.decode(self.tokenizer.encode(reference))
        return self._written[reference]

    def __call__(self, batch: RewardBatch) -> list[float]:
        return [
            float(any(text == self._as_written(r) for r in refs))
            for text, refs in zip(batch.texts, batch.reference_texts, strict=True)
        ]


def exact_match(
    generated: torch.Tensor,
    lengths: torch.Tensor,
    references: torch.Tensor,
    reference_lengths: torch.Tensor,
    reference_mask: torch.Tensor,
) -> torch.Tensor:
    """bool ``[B]``: does ``generated[b, :lengths[b]]`` equal some real reference of episode ``b``?"""
    width = max(generated.shape[1], references.shape[2])
    hyp = _mask_beyond(generated, lengths, width)  # [B, W]
    refs = _mask_beyond(references.flatten(0, 1), reference_lengths.flatten(), width)
    refs = refs.view(*references.shape[:2], width)  # [B, R, W]
    same = (hyp[:, None, :] == refs).all(-1) & (lengths[:, None] == reference_lengths) & reference_mask
    return same.any(-1)


def _mask_beyond(ids: torch.Tensor, lengths: torch.Tensor, width: int) -> torch.Tensor:
    """Right-pad ``ids`` to ``width`` and set every position at or beyond its length to -1."""
    out = torch.full((ids.shape[0], width), -1, dtype=ids.dtype, device=ids.device)
    out[:, : ids.shape[1]] = ids
    positions = torch.arange(width, device=ids.device)
    return out.masked_fill(positions[None, :] >= lengths[:, None], -1)
