"""Tests for the interpolated Kneser-Ney n-gram model (lmrl_gym.rewards.ngram)."""

from __future__ import annotations

import itertools
import json
from collections import Counter

import numpy as np
import pytest

from lmrl_gym.rewards.ngram import DISCOUNT_MAX, DISCOUNT_MIN, KneserNeyLM

BOS, EOS = 1, 2


def random_corpus(rng, vocab_size, num_seqs, max_len, low=3, high=None):
    high = vocab_size if high is None else high
    return [rng.integers(low, high, size=rng.integers(0, max_len + 1)).tolist() for _ in range(num_seqs)]


class ReferenceKN:
    """Dict-based interpolated Kneser-Ney, written straight from the formulas (slow, obviously correct)."""

    def __init__(self, seqs, order, vocab_size, bos, eos, discount=None):
        self.order, self.vocab_size = order, vocab_size
        self.counts = {k: Counter() for k in range(1, order + 1)}
        for seq in seqs:
            padded = [bos] * (order - 1) + list(seq) + [eos]
            for i in range(len(seq) + 1):
                self.counts[order][tuple(padded[i : i + order])] += 1
        for k in range(order - 1, 0, -1):  # continuation counts: distinct left extensions
            for gram in self.counts[k + 1]:
                self.counts[k][gram[1:]] += 1
        self.discounts = {}
        for k in range(1, order + 1):
            if discount is not None:
                self.discounts[k] = discount
                continue
            values = list(self.counts[k].values())
            n1, n2 = values.count(1), values.count(2)
            d = 0.5 if n1 + 2 * n2 == 0 else n1 / (n1 + 2 * n2)
            self.discounts[k] = min(max(d, DISCOUNT_MIN), DISCOUNT_MAX)

    def prob(self, context, word):
        p = 1.0 / self.vocab_size
        for k in range(1, self.order + 1):
            hist = tuple(context[len(context) - (k - 1) :])
            total = sum(c for g, c in self.counts[k].items() if g[:-1] == hist)
            types = sum(1 for g in self.counts[k] if g[:-1] == hist)
            if total == 0:
                continue
            d = self.discounts[k]
            c = self.counts[k].get(hist + (word,), 0)
            p = (max(c - d, 0.0) + d * types * p) / total
        return p


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("discount", [None, 0.7])
def test_distribution_sums_to_one_and_is_positive(order, discount):
    rng = np.random.default_rng(order * 10 + (discount is None))
    vocab_size = 15
    # ids 12..14 never appear in training
    corpus = random_corpus(rng, vocab_size, 80, 9, high=12)
    model = KneserNeyLM(order, discount).fit(corpus, vocab_size, BOS, EOS)
    seen = []  # contexts that occur in training
    for seq in corpus[:20]:
        padded = [BOS] * (order - 1) + seq
        seen += [padded[i : i + order - 1] for i in range(len(seq) + 1)]
    unseen = rng.integers(0, vocab_size, size=(100, order - 1))  # mostly unseen, some with unseen ids
    contexts = np.concatenate([np.array(seen, dtype=np.int64).reshape(len(seen), order - 1), unseen])
    probs = np.exp(model.next_token_logprobs(contexts))
    assert probs.shape == (contexts.shape[0], vocab_size)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=0, atol=1e-9)
    assert probs.min() > 0


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("discount", [None, 0.4, 1.0])
def test_logprob_matches_dict_reference(order, discount):
    rng = np.random.default_rng(100 + order)
    vocab_size = 7
    seqs = random_corpus(rng, vocab_size, 25, 6, high=6)
    model = KneserNeyLM(order, discount).fit(seqs, vocab_size, BOS, EOS)
    ref = ReferenceKN(seqs, order, vocab_size, BOS, EOS, discount)
    assert model.discounts == pytest.approx([ref.discounts[k] for k in range(1, order + 1)], abs=1e-15)
    # every context over the alphabet (plus bos) for small orders, a random sample otherwise
    alphabet = list(range(vocab_size))
    contexts = [list(c) for c in itertools.product(alphabet, repeat=order - 1)]
    if len(contexts) > 120:
        contexts = [contexts[i] for i in rng.choice(len(contexts), 120, replace=False)]
    contexts += [[BOS] * (order - 1)]
    pairs = [(c, w) for c in contexts for w in alphabet]
    ctx = np.array([c for c, _ in pairs], dtype=np.int64).reshape(len(pairs), order - 1)
    nxt = np.array([w for _, w in pairs], dtype=np.int64)
    got = model.logprob(ctx, nxt)
    want = np.log([ref.prob(c, w) for c, w in pairs])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    # next_token_logprobs agrees with logprob
    full = model.next_token_logprobs(ctx)
    np.testing.assert_allclose(full[np.arange(len(pairs)), nxt], got, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("include_eos", [True, False])
def test_sequence_logprob_is_sum_of_token_logprobs(order, include_eos):
    rng = np.random.default_rng(7 + order)
    vocab_size = 11
    model = KneserNeyLM(order).fit(random_corpus(rng, vocab_size, 60, 8), vocab_size, BOS, EOS)
    batch, width = 9, 7
    ids = rng.integers(3, vocab_size, size=(batch, width))
    lengths = np.array([0, 1, 7, 3, 5, 7, 2, 0, 4])
    ids[np.arange(width)[None, :] >= lengths[:, None]] = -5  # padding may hold anything
    seq = model.sequence_logprob(ids, lengths, include_eos=include_eos)
    tok = model.token_logprobs(ids, lengths, include_eos=include_eos)
    assert tok.shape == (batch, width + 1)
    np.testing.assert_allclose(seq, tok.sum(-1), rtol=1e-12, atol=1e-12)
    for b in range(batch):
        padded = [BOS] * (order - 1) + ids[b, : lengths[b]].tolist()
        targets = ids[b, : lengths[b]].tolist() + ([EOS] if include_eos else [])
        manual = [
            model.logprob(np.array([padded[t : t + order - 1]], dtype=np.int64).reshape(1, order - 1), [w])[0]
            for t, w in enumerate(targets)
        ]
        np.testing.assert_allclose(tok[b, : len(targets)], manual, rtol=1e-12, atol=1e-12)
        assert np.all(tok[b, len(targets) :] == 0)
        np.testing.assert_allclose(seq[b], sum(manual), rtol=1e-12, atol=1e-12)


def markov_corpus(rng, transition, num_seqs, max_len=30):
    vocab_size = transition.shape[0]
    seqs = []
    for _ in range(num_seqs):
        state, seq = BOS, []
        while len(seq) < max_len:
            state = int(rng.choice(vocab_size, p=transition[state]))
            if state == EOS:
                break
            seq.append(state)
        seqs.append(seq)
    return seqs


def test_held_out_text_beats_shuffled_text():
    rng = np.random.default_rng(3)
    vocab_size = 12
    transition = rng.dirichlet(np.full(vocab_size, 0.1), size=vocab_size)
    transition[:, [0, BOS]] = 0  # never emit pad / bos
    transition[:, EOS] += 0.08
    transition /= transition.sum(1, keepdims=True)
    train = markov_corpus(rng, transition, 400)
    held_out = [s for s in markov_corpus(rng, transition, 100) if len(s) >= 2]
    shuffled = [list(rng.permutation(s)) for s in held_out]
    model = KneserNeyLM(3).fit(train, vocab_size, BOS, EOS)

    def score(seqs):
        width = max(len(s) for s in seqs)
        ids = np.zeros((len(seqs), width), dtype=np.int64)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = s
        return model.sequence_logprob(ids, np.array([len(s) for s in seqs]))

    real, fake = score(held_out), score(shuffled)
    assert real.mean() > fake.mean() + 1.0
    assert np.mean(real >= fake) > 0.8


def test_round_trip_through_json():
    rng = np.random.default_rng(5)
    model = KneserNeyLM(3).fit(random_corpus(rng, 20, 50, 10), 20, BOS, EOS)
    data = json.loads(json.dumps(model.to_dict()))
    clone = KneserNeyLM.from_dict(data)
    ctx = rng.integers(0, 20, size=(30, 2))
    np.testing.assert_array_equal(clone.next_token_logprobs(ctx), model.next_token_logprobs(ctx))
    ids, lengths = rng.integers(3, 20, size=(6, 8)), rng.integers(0, 9, size=6)
    np.testing.assert_array_equal(clone.token_logprobs(ids, lengths), model.token_logprobs(ids, lengths))
    assert clone.discounts == model.discounts
    with pytest.raises(ValueError, match="not a KneserNeyLM dict"):
        KneserNeyLM.from_dict({"order": 3})


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="order must be >= 1"):
        KneserNeyLM(0)
    with pytest.raises(ValueError, match=r"discount must be in \(0, 1\]"):
        KneserNeyLM(2, discount=0.0)
    model = KneserNeyLM(3)
    with pytest.raises(ValueError, match="not fitted"):
        model.logprob(np.zeros((1, 2), dtype=np.int64), np.zeros(1, dtype=np.int64))
    with pytest.raises(ValueError, match="not fitted"):
        model.to_dict()
    with pytest.raises(ValueError, match="overflows int64"):
        KneserNeyLM(3).fit([[3]], 10**7, BOS, EOS)
    with pytest.raises(ValueError, match=r"outside the vocabulary \[0, 5\)"):
        KneserNeyLM(2).fit([[3, 5]], 5, BOS, EOS)
    with pytest.raises(ValueError, match="eos_id=9 is outside"):
        KneserNeyLM(2).fit([[3]], 5, BOS, 9)
    with pytest.raises(ValueError, match="at least one training sequence"):
        KneserNeyLM(2).fit([], 5, BOS, EOS)
    model.fit([[3, 4, 3]], 6, BOS, EOS)
    with pytest.raises(ValueError, match=r"shape \[B, order-1\] = \[B, 2\]"):
        model.next_token_logprobs(np.zeros((4, 3), dtype=np.int64))
    with pytest.raises(ValueError, match=r"contexts holds token id 6, outside the vocabulary \[0, 6\)"):
        model.next_token_logprobs(np.array([[1, 6]]))
    with pytest.raises(ValueError, match="next_ids holds token id -1"):
        model.logprob(np.array([[1, 1]]), np.array([-1]))
    with pytest.raises(ValueError, match=r"next_ids must have shape \[B\] = \[1\]"):
        model.logprob(np.array([[1, 1]]), np.array([3, 4]))
    with pytest.raises(ValueError, match="integer token ids"):
        model.next_token_logprobs(np.array([[1.0, 2.0]]))
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, T\] = \[0, 2\]"):
        model.sequence_logprob(np.array([[3, 4]]), np.array([3]))
    with pytest.raises(ValueError, match="ids holds token id 7"):
        model.sequence_logprob(np.array([[3, 7]]), np.array([2]))
    with pytest.raises(ValueError, match=r"ids must have shape \[B, T\]"):
        model.sequence_logprob(np.array([3, 4]), np.array([2]))
