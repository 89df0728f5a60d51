"""Token-id BLEU (lmrl_gym.rewards.bleu) against sacreBLEU, which is the reference implementation.

Ids are written as words ("w7") and scored by ``sacrebleu.metrics.BLEU(tokenize="none", ...)``; our number
must equal sacreBLEU's to 1e-9 on the 0-100 scale.
"""

from __future__ import annotations

import logging
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sacrebleu.metrics import BLEU

from lmrl_gym.rewards.bleu import (
    SMOOTH_METHODS,
    BleuStatistics,
    batched_sentence_bleu,
    bleu_from_statistics,
    bleu_signature,
    bleu_statistics,
    corpus_bleu,
    pad_references,
    pad_sequences,
    sentence_bleu,
)

TOL = 1e-9

# sacreBLEU warns on every sentence_score call without effective order; that is expected here.
logging.getLogger("sacrebleu").setLevel(logging.ERROR)


def words(ids: list[int]) -> str:
    return " ".join(f"w{i}" for i in ids)


def sacre(smooth_method: str, smooth_value: float | None, effective_order: bool, max_order: int = 4) -> BLEU:
    return BLEU(
        tokenize="none",
        smooth_method=smooth_method,
        smooth_value=smooth_value,
        effective_order=effective_order,
        max_ngram_order=max_order,
    )


def sacre_sentence(hyp, refs, smooth_method, smooth_value, effective_order, max_order=4) -> float:
    metric = sacre(smooth_method, smooth_value, effective_order, max_order)
    return metric.sentence_score(words(hyp), [words(r) for r in refs]).score


def sacre_corpus(hyps, refs, smooth_method, smooth_value, effective_order) -> float:
    # sacreBLEU takes reference *streams*; a segment with fewer references gets None (sacreBLEU drops
    # None, but keeps "" as a real, empty reference).
    num_streams = max(len(rs) for rs in refs)
    streams = [[words(rs[k]) if k < len(rs) else None for rs in refs] for k in range(num_streams)]
    metric = sacre(smooth_method, smooth_value, effective_order)
    return metric.corpus_score([words(h) for h in hyps], streams).score


# --------------------------------------------------------------------------------------------------------
# pinned values (shared/FACTS.md)


def test_pinned_brevity_penalty_value():
    vocab = {w: i for i, w in enumerate("the cat sat on mat".split())}
    hyp = [vocab[w] for w in "the cat sat".split()]
    ref = [vocab[w] for w in "the cat sat on the mat".split()]
    assert sentence_bleu(hyp, [ref]) == pytest.approx(36.78794411714425, abs=TOL)


@pytest.mark.parametrize(
    ("smooth_method", "expected"),
    [
        ("none", 0.0),
        ("exp", 31.947155212313625),
        ("floor", 16.990442448471217),
        ("add-k", 45.180100180492246),
    ],
)
def test_pinned_smoothing_values(smooth_method, expected):
    a, b, c, d, x, y = range(6)
    score = sentence_bleu([a, b, c, d], [[a, b, x, y]], smooth_method=smooth_method, effective_order=True)
    assert score == pytest.approx(expected, abs=TOL)


# --------------------------------------------------------------------------------------------------------
# property tests against sacreBLEU

smoothings = st.one_of(
    st.tuples(st.sampled_from(["none", "exp"]), st.none()),
    st.tuples(st.sampled_from(["floor", "add-k"]), st.sampled_from([None, 0.0, 0.05, 0.5, 1, 2.5])),
)


@st.composite
def segments(draw, vocab_size: int):
    """One segment: a hypothesis (possibly empty) and 1-3 references (possibly empty: sacreBLEU accepts ""
    as a real reference of length 0, so we keep them)."""
    token = st.integers(0, vocab_size - 1)
    hyp = draw(st.lists(token, max_size=15))
    refs = draw(st.lists(st.lists(token, max_size=15), min_size=1, max_size=3))
    # Bias towards overlap so that higher-order matches and clipping are exercised, not just zeros.
    if refs and hyp and draw(st.booleans()):
        start = draw(st.integers(0, len(hyp) - 1))
        refs[0] = refs[0][:3] + hyp[start:] + refs[0][3:]
    return hyp, refs


@st.composite
def corpora(draw, min_size: int, max_size: int):
    vocab_size = draw(st.integers(3, 20))
    return draw(st.lists(segments(vocab_size), min_size=min_size, max_size=max_size))


@settings(max_examples=1000, deadline=None)
@given(corpus=corpora(1, 1), smoothing=smoothings, effective_order=st.booleans())
def test_sentence_bleu_equals_sacrebleu(corpus, smoothing, effective_order):
    (hyp, refs) = corpus[0]
    smooth_method, smooth_value = smoothing
    expected = sacre_sentence(hyp, refs, smooth_method, smooth_value, effective_order)
    got = sentence_bleu(hyp, refs, smooth_method, smooth_value, effective_order)
    assert got == pytest.approx(expected, abs=TOL)

    # The statistics too (sacreBLEU's layout: [hyp_len, ref_len, correct..., total...]).
    sacre_stats = sacre("none", None, False)._extract_corpus_statistics(
        [words(hyp)], [[words(r)] for r in refs]
    )
    h, hl = pad_sequences([hyp])
    r, rl, rm = pad_references([refs])
    stats = bleu_statistics(h, hl, r, rl, rm)
    ours = [
        int(stats.hyp_len[0]),
        int(stats.ref_len[0]),
        *stats.correct[0].tolist(),
        *stats.total[0].tolist(),
    ]
    assert ours == sacre_stats[0]


@settings(max_examples=400, deadline=None)
@given(corpus=corpora(2, 6), smoothing=smoothings, effective_order=st.booleans())
def test_corpus_bleu_equals_sacrebleu(corpus, smoothing, effective_order):
    hyps = [h for h, _ in corpus]
    refs = [r for _, r in corpus]
    smooth_method, smooth_value = smoothing
    # sacreBLEU reads hyps[0] / refs[0][0] as the type check; the None padding in later streams is fine.
    expected = sacre_corpus(hyps, refs, smooth_method, smooth_value, effective_order)
    got = corpus_bleu(hyps, refs, smooth_method, smooth_value, effective_order)
    assert got == pytest.approx(expected, abs=TOL)


@settings(max_examples=150, deadline=None)
@given(corpus=corpora(1, 1), smoothing=smoothings, max_order=st.sampled_from([1, 2, 3, 5, 6]))
def test_other_orders_equal_sacrebleu(corpus, smoothing, max_order):
    (hyp, refs) = corpus[0]
    smooth_method, smooth_value = smoothing
    expected = sacre_sentence(hyp, refs, smooth_method, smooth_value, True, max_order)
    got = sentence_bleu(hyp, refs, smooth_method, smooth_value, True, max_order=max_order)
    assert got == pytest.approx(expected, abs=TOL)


@st.composite
def raw_statistics(draw):
    """Arbitrary statistics, not only those a real corpus produces (e.g. total[1] == 0 < total[2])."""
    max_order = draw(st.integers(1, 5))
    total = draw(st.lists(st.integers(0, 30), min_size=max_order, max_size=max_order))
    correct = [draw(st.integers(0, t)) for t in total]
    return correct, total, draw(st.integers(0, 40)), draw(st.integers(0, 40))


@settings(max_examples=300, deadline=None)
@given(raw=raw_statistics(), smoothing=smoothings, effective_order=st.booleans())
def test_score_from_statistics_equals_sacrebleu_compute_bleu(raw, smoothing, effective_order):
    correct, total, sys_len, ref_len = raw
    smooth_method, smooth_value = smoothing
    # compute_bleu adds add-k's value into the lists it is given: hand it copies.
    expected = BLEU.compute_bleu(
        list(correct),
        list(total),
        sys_len,
        ref_len,
        smooth_method,
        smooth_value,
        effective_order,
        len(correct),
    ).score
    stats = BleuStatistics(
        torch.tensor([correct]), torch.tensor([total]), torch.tensor([sys_len]), torch.tensor([ref_len])
    )
    got = float(bleu_from_statistics(stats, smooth_method, smooth_value, effective_order)[0])
    assert got == pytest.approx(expected, abs=TOL)


@pytest.mark.parametrize("smooth_method", SMOOTH_METHODS)
@pytest.mark.parametrize("effective_order", [True, False])
@pytest.mark.parametrize(
    ("hyp", "refs"),
    [
        ([], [[1, 2, 3]]),  # empty hypothesis
        ([], [[]]),  # empty hypothesis and reference
        ([1, 2], [[1, 2, 3, 4]]),  # shorter than n for n = 3, 4
        ([5, 6, 7, 8, 9], [[1, 2, 3]]),  # nothing matches: 0 before smoothing
        ([1, 2, 3], [[]]),  # empty reference: brevity penalty 1
        ([1, 1, 1, 1, 1], [[1, 1], [1, 1, 1]]),  # clipping by the best single reference
        ([1, 2, 3, 4, 5, 6], [[1, 2], [1, 2, 3, 4, 5, 6, 7, 8], [9, 9, 9, 9]]),  # tie 4 vs 8 -> shorter
        ([3, 1, 2, 3, 1], [[1, 2, 3, 1, 2, 3, 4]]),  # brevity penalty with matches
    ],
)
def test_edge_cases_equal_sacrebleu(hyp, refs, smooth_method, effective_order):
    expected = sacre_sentence(hyp, refs, smooth_method, None, effective_order)
    assert sentence_bleu(hyp, refs, smooth_method, None, effective_order) == pytest.approx(expected, abs=TOL)
    expected_corpus = sacre_corpus([hyp, hyp], [refs, refs], smooth_method, None, effective_order)
    got_corpus = corpus_bleu([hyp, hyp], [refs, refs], smooth_method, None, effective_order)
    assert got_corpus == pytest.approx(expected_corpus, abs=TOL)


def test_closest_reference_length_prefers_shorter_on_tie():
    h, hl = pad_sequences([[1, 2, 3, 4, 5, 6]])
    r, rl, rm = pad_references([[[1] * 8, [2] * 4, [3] * 10]])
    assert int(bleu_statistics(h, hl, r, rl, rm).ref_len[0]) == 4


# --------------------------------------------------------------------------------------------------------
# the batched function


def random_batch(rng: random.Random, batch: int, vocab: int):
    hyps, refs = [], []
    for _ in range(batch):
        hyps.append([rng.randrange(vocab) for _ in range(rng.randint(0, 20))])
        refs.append(
            [[rng.randrange(vocab) for _ in range(rng.randint(0, 20))] for _ in range(rng.randint(1, 3))]
        )
    return hyps, refs


def garbage_padding(ids: torch.Tensor, lengths: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Overwrite everything beyond the lengths with random values (negative ones included)."""
    pos = torch.arange(ids.shape[-1])
    noise = torch.randint(-5, 8, ids.shape, generator=gen)
    return torch.where(pos < lengths[..., None], ids, noise)


@pytest.mark.parametrize("smooth_method", SMOOTH_METHODS)
@pytest.mark.parametrize("effective_order", [True, False])
def test_batched_equals_per_example(smooth_method, effective_order):
    rng = random.Random(0)
    gen = torch.Generator().manual_seed(0)
    hyps, refs = random_batch(rng, 64, vocab=6)
    h, hl = pad_sequences(hyps)
    r, rl, rm = pad_references(refs)
    h, r = garbage_padding(h, hl, gen), garbage_padding(r, rl, gen)
    # Absent references hold garbage too (and lengths that would otherwise be the closest): ignored.
    r = torch.where(rm[..., None], r, torch.randint(0, 6, r.shape, generator=gen))
    rl = torch.where(rm, rl, hl[:, None])
    scores = batched_sentence_bleu(h, hl, r, rl, rm, smooth_method, None, effective_order)
    assert scores.dtype == torch.float64 and scores.shape == (64,)
    expected = [
        sentence_bleu(x, y, smooth_method, None, effective_order) for x, y in zip(hyps, refs, strict=True)
    ]
    assert scores.tolist() == pytest.approx(expected, abs=TOL)
    assert any(s > 0 for s in expected)  # the batch is not trivially all-zero
    # The environments' path (no data-reading checks) computes the same numbers.
    unchecked = batched_sentence_bleu(
        h, hl, r, rl, rm, smooth_method, None, effective_order, check_values=False
    )
    assert torch.equal(unchecked, scores)


def test_batched_handles_large_ids_and_int32():
    """No n-gram hashing: ids near 2^62 (which would overflow any base-vocab polynomial key) and int32
    inputs give the same scores as small int64 ids."""
    rng = random.Random(1)
    hyps, refs = random_batch(rng, 32, vocab=5)
    h, hl = pad_sequences(hyps)
    r, rl, rm = pad_references(refs)
    small = batched_sentence_bleu(h, hl, r, rl, rm)
    offset = 2**62
    assert torch.equal(batched_sentence_bleu(h + offset, hl, r + offset, rl, rm), small)
    as_int32 = batched_sentence_bleu(h.int(), hl.int(), r.int(), rl.int(), rm)
    assert torch.equal(as_int32, small)


def test_long_sequences_equal_sacrebleu():
    """Sequences longer than one 56-position bit word: matches must carry across word boundaries. A tiny
    vocabulary and copied spans make long n-gram matches that straddle positions 55/56 and 111/112."""
    rng = random.Random(3)
    hyps, refs = [], []
    for _ in range(24):
        hyp = [rng.randrange(3) for _ in range(rng.randint(40, 130))]
        segment_refs = []
        for _ in range(rng.randint(1, 3)):
            ref = [rng.randrange(3) for _ in range(rng.randint(0, 130))]
            start = rng.randrange(len(hyp))
            ref[50:50] = hyp[start : start + 30]  # a long common span around the word boundary
            segment_refs.append(ref)
        hyps.append(hyp)
        refs.append(segment_refs)
    h, hl = pad_sequences(hyps)
    r, rl, rm = pad_references(refs)
    for smooth_method, effective_order in [("exp", True), ("none", False), ("add-k", True), ("floor", False)]:
        scores = batched_sentence_bleu(h, hl, r, rl, rm, smooth_method, None, effective_order)
        expected = [
            sacre_sentence(x, y, smooth_method, None, effective_order)
            for x, y in zip(hyps, refs, strict=True)
        ]
        assert scores.tolist() == pytest.approx(expected, abs=TOL)
    stats = bleu_statistics(h, hl, r, rl, rm)
    sacre_stats = sacre("none", None, False)._extract_corpus_statistics(
        [words(x) for x in hyps], [[words(rs[k]) if k < len(rs) else None for rs in refs] for k in range(3)]
    )
    assert stats.correct.tolist() == [row[2:6] for row in sacre_stats]
    assert stats.ref_len.tolist() == [row[1] for row in sacre_stats]


def test_portable_bit_packing_gives_the_same_statistics(monkeypatch):
    """The byte-order-independent packing path (used on big-endian machines) agrees with the fast one."""
    import lmrl_gym.rewards.bleu as bleu_module

    rng = random.Random(4)
    hyps, refs = random_batch(rng, 32, vocab=4)
    hyps[0] = [rng.randrange(3) for _ in range(70)]  # two words per bit set
    refs[0] = [hyps[0][10:65]]
    h, hl = pad_sequences(hyps)
    r, rl, rm = pad_references(refs)
    fast = bleu_statistics(h, hl, r, rl, rm)
    monkeypatch.setattr(bleu_module, "_LITTLE_ENDIAN", False)
    portable = bleu_statistics(h, hl, r, rl, rm)
    for a, b in zip(fast, portable, strict=True):
        assert torch.equal(a, b)


def test_all_hypotheses_empty():
    h, hl = pad_sequences([[], []])
    r, rl, rm = pad_references([[[1, 2]], [[], [3]]])
    assert h.shape == (2, 0)
    stats = bleu_statistics(h, hl, r, rl, rm)
    assert stats.correct.tolist() == [[0] * 4] * 2 and stats.ref_len.tolist() == [2, 0]
    assert batched_sentence_bleu(h, hl, r, rl, rm).tolist() == [0.0, 0.0]


def test_statistics_of_a_known_example():
    # hyp "1 1 2 1 2", refs "1 2 1" and "1 1 1 1 2". Unigrams: 1 occurs 3x, best single ref has 4 -> 3;
    # 2 occurs 2x, best single ref has 1 -> 1 (4 in all, although the refs together have two 2s).
    # Bigrams (1,1) (1,2)x2 (2,1): best single-ref counts 3, 1, 1 -> 3. Trigrams (1,1,2) (1,2,1) (2,1,2):
    # the first is in ref 2, the second in ref 1 -> 2. 4-grams (1,1,2,1) (1,2,1,2): none -> 0.
    h, hl = pad_sequences([[1, 1, 2, 1, 2]])
    r, rl, rm = pad_references([[[1, 2, 1], [1, 1, 1, 1, 2]]])
    stats = bleu_statistics(h, hl, r, rl, rm)
    assert stats.correct.tolist() == [[4, 3, 2, 0]]
    assert stats.total.tolist() == [[5, 4, 3, 2]]
    assert stats.hyp_len.tolist() == [5] and stats.ref_len.tolist() == [5]
    assert stats.correct.dtype == torch.int64


def test_many_repeats_of_one_token():
    """Counts up to the full word width (56) and across words: a token repeated 45 / 50 / 120 times."""
    h, hl = pad_sequences([[1] * 50, [2] * 120])
    r, rl, rm = pad_references([[[1] * 45], [[2] * 100, [2] * 110]])
    stats = bleu_statistics(h, hl, r, rl, rm)
    assert stats.correct.tolist() == [[45, 44, 43, 42], [110, 109, 108, 107]]
    expected = [sacre_sentence([1] * 50, [[1] * 45], "exp", None, True)]
    expected.append(sacre_sentence([2] * 120, [[2] * 100, [2] * 110], "exp", None, True))
    assert batched_sentence_bleu(h, hl, r, rl, rm).tolist() == pytest.approx(expected, abs=TOL)


def test_empty_batch():
    h = torch.zeros((0, 3), dtype=torch.long)
    r = torch.zeros((0, 2, 4), dtype=torch.long)
    scores = batched_sentence_bleu(
        h, torch.zeros(0, dtype=torch.long), r, torch.zeros((0, 2), dtype=torch.long)
    )
    assert scores.shape == (0,) and scores.dtype == torch.float64


def test_corpus_statistics_sum():
    stats = BleuStatistics(
        correct=torch.tensor([[1, 0, 0, 0], [2, 1, 0, 0]]),
        total=torch.tensor([[2, 1, 0, 0], [3, 2, 1, 0]]),
        hyp_len=torch.tensor([2, 3]),
        ref_len=torch.tensor([2, 4]),
    )
    total = stats.sum()
    assert total.correct.tolist() == [[3, 1, 0, 0]] and total.ref_len.tolist() == [6]
    expected = BLEU.compute_bleu([3, 1, 0, 0], [5, 3, 1, 0], 5, 6, "exp", None, True).score
    assert float(bleu_from_statistics(total, "exp", None, True)[0]) == pytest.approx(expected, abs=TOL)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    rng = random.Random(2)
    hyps, refs = random_batch(rng, 128, vocab=6)
    h, hl = pad_sequences(hyps)
    r, rl, rm = pad_references(refs)
    cpu = batched_sentence_bleu(h, hl, r, rl, rm)
    cuda = batched_sentence_bleu(h.cuda(), hl.cuda(), r.cuda(), rl.cuda(), rm.cuda())
    assert cuda.device.type == "cuda"
    assert cuda.cpu().tolist() == pytest.approx(cpu.tolist(), abs=TOL)


def test_signature():
    assert bleu_signature("exp", None, True) == "BLEU(tokens=ids, order=4, smooth=exp, effective_order=True)"
    assert (
        bleu_signature("floor", None, False)
        == "BLEU(tokens=ids, order=4, smooth=floor[0.10], effective_order=False)"
    )
    assert bleu_signature("add-k", 2, True, max_order=3) == (
        "BLEU(tokens=ids, order=3, smooth=add-k[2.00], effective_order=True)"
    )


# --------------------------------------------------------------------------------------------------------
# bad inputs


def good_batch():
    h, hl = pad_sequences([[1, 2, 3], [4]])
    r, rl, rm = pad_references([[[1, 2]], [[4], [5, 6]]])
    return h, hl, r, rl, rm


def test_unknown_smooth_method():
    with pytest.raises(ValueError, match=r"unknown smooth_method 'expo'.*none, floor, add-k, exp"):
        sentence_bleu([1], [[1]], smooth_method="expo")
    with pytest.raises(ValueError, match="unknown smooth_method"):
        batched_sentence_bleu(*good_batch(), smooth_method="add_k")
    with pytest.raises(ValueError, match="unknown smooth_method"):
        bleu_signature("nist", None, True)


def test_negative_smooth_value():
    with pytest.raises(ValueError, match="smooth_value must be a finite number >= 0"):
        sentence_bleu([1], [[1]], smooth_method="floor", smooth_value=-0.1)


def test_negative_ids():
    with pytest.raises(ValueError, match="negative id in hyp"):
        sentence_bleu([1, -3], [[1]])
    with pytest.raises(ValueError, match="negative id in refs"):
        sentence_bleu([1], [[1], [2, -1]])
    # Negative values in padding are fine: padding may hold anything.
    h, hl, r, rl, rm = good_batch()
    h[1, 1:] = -1
    r[0, 0, 2:] = -7
    batched_sentence_bleu(h, hl, r, rl, rm)


def test_hypothesis_without_references():
    with pytest.raises(ValueError, match="at least one reference"):
        sentence_bleu([1, 2], [])
    with pytest.raises(ValueError, match="at least one reference; segment 1 has none"):
        corpus_bleu([[1], [2]], [[[1]], []])
    h, hl, r, rl, rm = good_batch()
    rm[0] = False
    with pytest.raises(ValueError, match=r"at least one reference; rows without one: \[0\]"):
        batched_sentence_bleu(h, hl, r, rl, rm)


def test_mismatched_batch_sizes():
    h, hl, r, rl, rm = good_batch()
    with pytest.raises(ValueError, match="batch size mismatch: hyp has 2 rows but refs has 1"):
        batched_sentence_bleu(h, hl, r[:1], rl[:1], rm[:1])
    with pytest.raises(ValueError, match="batch size mismatch: hyp has 2 rows but hyp_lengths has 1"):
        batched_sentence_bleu(h, hl[:1], r, rl, rm)
    with pytest.raises(ValueError, match="ref_lengths must have shape"):
        batched_sentence_bleu(h, hl, r, rl[:, :1], rm)
    with pytest.raises(ValueError, match="ref_mask must have shape"):
        batched_sentence_bleu(h, hl, r, rl, rm[:1])
    with pytest.raises(ValueError, match="batch size mismatch: 2 hypotheses but 1 reference lists"):
        corpus_bleu([[1], [2]], [[[1]]])


def test_bad_lengths_and_dtypes():
    h, hl, r, rl, rm = good_batch()
    with pytest.raises(ValueError, match=r"hyp_lengths must lie in \[0, 3\]"):
        batched_sentence_bleu(h, hl + 5, r, rl, rm)
    with pytest.raises(ValueError, match="ref_lengths of real references must lie"):
        batched_sentence_bleu(h, hl, r, rl - 3, rm)
    with pytest.raises(ValueError, match="hyp must have an integer dtype"):
        batched_sentence_bleu(h.float(), hl, r, rl, rm)
    with pytest.raises(ValueError, match="ref_mask must be a bool"):
        batched_sentence_bleu(h, hl, r, rl, rm.long())
    with pytest.raises(ValueError, match="refs must have 3 dimensions"):
        batched_sentence_bleu(h, hl, r[:, 0], rl, rm)
    with pytest.raises(ValueError, match="token ids must be integers"):
        sentence_bleu([1.5, 2.0], [[1]])
    with pytest.raises(ValueError, match="corpus_bleu needs at least one hypothesis"):
        corpus_bleu([], [])
