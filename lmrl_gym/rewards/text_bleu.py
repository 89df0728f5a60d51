"""BLEU on text, with sacreBLEU's default tokenisation (``13a``): the number ``sacrebleu.sentence_bleu`` gives.

A subword vocabulary (byte-level BPE, SentencePiece) makes id n-grams a poor unit for BLEU: one word is
several ids, and the same text has several id sequences. So on a Hugging Face tokenizer the environment
decodes the generated ids and scores the text as sacreBLEU does: each segment is split into words by the
``13a`` rules (those of WMT's ``mteval-v13a.pl``), and BLEU is computed on the words.

The words of a batch are numbered (a dictionary per call) and the existing batched id-BLEU of
:mod:`lmrl_gym.rewards.bleu` scores the resulting id sequences, so the only per-episode Python work is the
tokenisation of each text (cached for repeated texts, e.g. references).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

import torch

from lmrl_gym.rewards.base import Reward, RewardBatch, RewardContext
from lmrl_gym.rewards.bleu import (
    batched_sentence_bleu,
    bleu_from_statistics,
    bleu_signature,
    bleu_statistics,
    pad_references,
    pad_sequences,
)
from lmrl_gym.rewards.sequence_rewards import BLEUReward

# --------------------------------------------------------------------------------------------- 13a words
# The rules of mteval-v13a as sacreBLEU 2.x applies them for tokenize="13a" (its default), in its order:
# 1. trailing whitespace is dropped (sacreBLEU's BLEU does this before tokenising);
# 2. "<skipped>" is removed, a hyphen at a line end joins the lines, other newlines become spaces;
# 3. four XML entities are unescaped, in this order (so "&amp;quot;" becomes "&quot;", not '"');
# 4. the text is wrapped in one space on each side (it gives the period / comma rules a left and right
#    neighbour at the ends);
# 5. every ASCII symbol below is split off as its own word (everything in 0x20-0x7E except letters, digits
#    and the four characters ' , - .);
# 6. a period or comma is split off unless a digit precedes it, then unless a digit follows it; each rule
#    is one left-to-right pass whose matches do not overlap (a character consumed as the left context of
#    one match cannot start the next), which the regular expressions below reproduce;
# 7. a hyphen after a digit is split off;
# 8. words are the maximal runs of non-whitespace.
_ENTITIES = (("&quot;", '"'), ("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">"))
_SYMBOLS = [
    *range(0x20, 0x27),  # space ! " # $ % &
    *range(0x28, 0x2C),  # ( ) * +
    0x2F,  # /
    *range(0x3A, 0x41),  # : ; < = > ? @
    *range(0x5B, 0x61),  # [ \ ] ^ _ `
    *range(0x7B, 0x7F),  # { | } ~
]
_SPLIT_SYMBOLS = str.maketrans({c: f" {chr(c)} " for c in _SYMBOLS})
_PERIOD_COMMA_AFTER_NON_DIGIT = re.compile(r"([^0-9])([.,])")
_PERIOD_COMMA_BEFORE_NON_DIGIT = re.compile(r"([.,])([^0-9])")
_HYPHEN_AFTER_DIGIT = re.compile(r"([0-9])(-)")


@lru_cache(maxsize=2**16)
def tokenize_13a(text: str) -> tuple[str, ...]:
    """The words sacreBLEU's ``13a`` tokenisation makes of ``text`` (as BLEU sees a segment: trailing
    whitespace dropped first). Cached: references recur every time their example is drawn."""
    line = text.rstrip()
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        for entity, char in _ENTITIES:
            line = line.replace(entity, char)
    line = f" {line} ".translate(_SPLIT_SYMBOLS)
    line = _PERIOD_COMMA_AFTER_NON_DIGIT.sub(r"\1 \2 ", line)
    line = _PERIOD_COMMA_BEFORE_NON_DIGIT.sub(r" \1 \2", line)
    line = _HYPHEN_AFTER_DIGIT.sub(r"\1 \2 ", line)
    return tuple(line.split())


def _word_ids(
    hyps: Sequence[str], refs: Sequence[Sequence[str]]
) -> tuple[list[list[int]], list[list[list[int]]]]:
    """13a words of ``hyps`` and ``refs`` as integer ids, numbered in a dictionary shared by the batch."""
    if isinstance(hyps, str):
        raise ValueError("hyps must be a sequence of texts, got a str")
    if len(hyps) != len(refs):
        raise ValueError(f"batch size mismatch: {len(hyps)} hypotheses but {len(refs)} reference lists")
    ids: dict[str, int] = {}

    def number(text: object) -> list[int]:
        if not isinstance(text, str):
            raise ValueError(f"BLEU on text needs strings, got {type(text).__name__} ({text!r:.60})")
        return [ids.setdefault(word, len(ids)) for word in tokenize_13a(text)]

    hyp_ids = [number(h) for h in hyps]
    ref_ids = []
    for b, rs in enumerate(refs):
        if isinstance(rs, str):
            raise ValueError(f"refs[{b}] must be a list of reference texts, got a str")
        ref_ids.append([number(r) for r in rs])
    return hyp_ids, ref_ids


def sentence_bleu_texts(
    hyps: Sequence[str],
    refs: Sequence[Sequence[str]],
    smooth_method: str = "exp",
    smooth_value: float | None = None,
    effective_order: bool = True,
    *,
    max_order: int = 4,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Sentence BLEU of each text against its own references, on 13a words, in one batched computation.

    Row ``b`` equals ``sacrebleu.sentence_bleu(hyps[b], refs[b], smooth_method=..., smooth_value=...,
    use_effective_order=...).score`` (sacreBLEU's defaults: ``exp`` smoothing, effective order).

    :param hyps: B texts.
    :param refs: B lists of reference texts (at least one each; their number may differ).
    :return: float64 ``[B]`` scores on the 0-100 scale, on ``device`` (default CPU).
    :raises ValueError: mismatched lengths, a row without references, a non-string, bad smoothing.
    """
    hyp_ids, ref_ids = _word_ids(hyps, refs)
    hyp, hyp_lengths = pad_sequences(hyp_ids, device=device)
    ref, ref_lengths, ref_mask = pad_references(ref_ids, device=device)
    return batched_sentence_bleu(
        hyp,
        hyp_lengths,
        ref,
        ref_lengths,
        ref_mask,
        smooth_method,
        smooth_value,
        effective_order,
        max_order=max_order,
        check_values=False,  # ids made here: non-negative, lengths consistent, every row has a reference
    )


def corpus_bleu_texts(
    hyps: Sequence[str],
    refs: Sequence[Sequence[str]],
    smooth_method: str = "exp",
    smooth_value: float | None = None,
    effective_order: bool = False,
    *,
    max_order: int = 4,
) -> float:
    """Corpus BLEU on 13a words (statistics summed over segments), as ``sacrebleu.corpus_bleu``.

    Unlike sacreBLEU (reference streams), ``refs[i]`` is the list of references of ``hyps[i]``.
    """
    if len(hyps) == 0:
        raise ValueError("corpus_bleu_texts needs at least one hypothesis; hyps is empty")
    hyp_ids, ref_ids = _word_ids(hyps, refs)
    hyp, hyp_lengths = pad_sequences(hyp_ids)
    ref, ref_lengths, ref_mask = pad_references(ref_ids)
    stats = bleu_statistics(hyp, hyp_lengths, ref, ref_lengths, ref_mask, max_order=max_order)
    return float(bleu_from_statistics(stats.sum(), smooth_method, smooth_value, effective_order)[0])


class TextBLEUReward(BLEUReward):
    """Sentence BLEU of the decoded text against the reference texts, on 13a words, scaled to [0, 1].

    What ``reward="bleu"`` becomes on a Hugging Face tokenizer (:class:`~lmrl_gym.rewards.BLEUReward`
    binds to it, keeping its settings): ``sacrebleu.sentence_bleu(text, references).score / 100``. The text
    is decoded with special tokens skipped (eos excluded).
    """

    @property
    def signature(self) -> str:
        return bleu_signature(self.smooth_method, self.smooth_value, self.effective_order, tokens="13a")

    def bind(self, context: RewardContext) -> Reward:
        return self

    def __call__(self, batch: RewardBatch) -> torch.Tensor:
        scores = sentence_bleu_texts(
            batch.texts,
            batch.reference_texts,
            self.smooth_method,
            self.smooth_value,
            self.effective_order,
            device=batch.generated.device,
        )
        return scores / 100.0
