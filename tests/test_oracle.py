"""Tests for the oracle task (lmrl_gym.tasks.oracle)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lmrl_gym.tasks.base import SPLITS, Example, Task
from lmrl_gym.tasks.oracle import OracleLM, OracleTask, make_oracle_task


def all_sequences(words, max_length):
    for length in range(max_length + 1):
        yield from (list(s) for s in itertools.product(words, repeat=length))


@pytest.mark.parametrize("order", [1, 2, 3])
def test_next_symbol_distributions_sum_to_one(order):
    oracle = OracleLM(num_words=6, order=order, mean_length=5, seed=order)
    assert oracle.table.shape == (7 ** (order - 1), 7)
    assert np.all(oracle.table >= 0)
    np.testing.assert_allclose(oracle.table.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    m = 1 / (5 + 1)
    assert np.all((oracle.table[:, -1] >= m / 2) & (oracle.table[:, -1] <= 1.5 * m))
    dist = oracle.next_distribution(["w0"] * (order - 1))
    assert set(dist) == {*oracle.words, "</s>"}
    assert sum(dist.values()) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_probabilities_of_all_sequences_sum_to_one(order):
    oracle = OracleLM(num_words=3, order=order, mean_length=2, max_length=4, concentration=0.5, seed=11)
    seqs = list(all_sequences(oracle.words, 4))
    assert np.exp(oracle.log_prob(seqs)).sum() == pytest.approx(1.0, abs=1e-12)
    # conditional on a prefix, the continuations' probabilities sum to 1 as well
    prefix = ["w1", "w0"]
    conts = [prefix + s for s in all_sequences(oracle.words, 2)]
    cond = oracle.log_prob(conts, prefix_lengths=np.full(len(conts), 2))
    assert np.exp(cond).sum() == pytest.approx(1.0, abs=1e-12)
    # and chain rule: log p(seq) = log p(prefix words) + log p(continuation | prefix)
    full = oracle.log_prob(conts)
    prefix_words = np.log(oracle.next_distribution([])["w1"]) + np.log(oracle.next_distribution(["w1"])["w0"])
    np.testing.assert_allclose(full, prefix_words + cond, rtol=1e-12)


def test_sampled_bigram_frequencies_match_the_model():
    oracle = OracleLM(num_words=5, order=2, mean_length=4, max_length=60, concentration=0.5, seed=2)
    samples = oracle.sample(20000, np.random.default_rng(0))
    counts = np.zeros_like(oracle.table)
    for seq in samples:
        ids = [oracle.bos_id] + [oracle.word_to_id[w] for w in seq] + [oracle.end_id]
        if len(seq) >= oracle.max_length:
            ids = ids[:-1]  # the end after max_length words is forced, not drawn
        for a, b in zip(ids[:-1], ids[1:], strict=True):
            counts[a, b] += 1
    checked = 0
    for ctx in range(counts.shape[0]):
        n = counts[ctx].sum()
        if n < 500:
            continue
        checked += 1
        p = oracle.table[ctx]
        freq = counts[ctx] / n
        tolerance = 5 * np.sqrt(p * (1 - p) / n) + 1e-3
        assert np.all(np.abs(freq - p) <= tolerance), (ctx, freq, p)
    assert checked >= 4


def test_log_prob_prefers_own_samples():
    oracle = OracleLM(seed=5)
    rng = np.random.default_rng(1)
    samples = [s for s in oracle.sample(2000, rng) if len(s) >= 3]
    own = oracle.log_prob(samples)
    assert np.all(np.isfinite(own))
    shuffled = oracle.log_prob([list(rng.permutation(s)) for s in samples])
    uniform = oracle.log_prob([[f"w{i}" for i in rng.integers(0, oracle.num_words, len(s))] for s in samples])
    assert own.mean() > shuffled.mean() + 1.0
    assert own.mean() > uniform.mean() + 5.0
    # strings and word lists agree; unknown words and over-long sequences get -inf
    np.testing.assert_array_equal(oracle.log_prob([" ".join(s) for s in samples[:50]]), own[:50])
    bad = oracle.log_prob(["w0 w1 nope", ["w0"] * (oracle.max_length + 1), ""])
    assert bad[0] == -np.inf and bad[1] == -np.inf and np.isfinite(bad[2])


def test_determinism_by_seed():
    a, b, c = OracleLM(seed=7), OracleLM(seed=7), OracleLM(seed=8)
    np.testing.assert_array_equal(a.table, b.table)
    assert not np.array_equal(a.table, c.table)
    assert a.sample(50, np.random.default_rng(3)) == b.sample(50, np.random.default_rng(3))
    t1 = make_oracle_task(num_examples=300, seed=7)
    t2 = make_oracle_task(num_examples=300, seed=7)
    t3 = make_oracle_task(num_examples=300, seed=8)
    assert t1.splits == t2.splits
    assert t1.splits != t3.splits


@pytest.mark.parametrize("prompt_length", [0, 2])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_task_splits_and_examples(prompt_length, order):
    task = make_oracle_task(num_words=8, order=order, num_examples=600, prompt_length=prompt_length, seed=1)
    assert isinstance(task, Task) and isinstance(task, OracleTask)
    assert task.name == "oracle" and task.level == "word"
    assert task.config["prompt_length"] == prompt_length and task.config["order"] == order
    sizes = {s: len(task.examples(s)) for s in SPLITS}
    assert sum(sizes.values()) == 600
    assert all(v > 0 for v in sizes.values())
    assert sizes["train"] >= 0.7 * 600
    pairs = {s: {(ex.prompt, ex.references[0]) for ex in task.examples(s)} for s in SPLITS}
    assert not pairs["train"] & pairs["validation"]
    assert not pairs["train"] & pairs["test"]
    assert not pairs["validation"] & pairs["test"]
    for ex in task.examples("train")[:100]:
        assert isinstance(ex, Example)
        assert len(ex.prompt.split()) == prompt_length
        assert ex.references[0].split() and len(ex.references) == 1
        assert all(w in task.oracle.word_to_id for w in (ex.prompt + " " + ex.references[0]).split())
    tok = task.tokenizer
    ex = task.examples("train")[0]
    assert tok.decode(tok.encode(ex.references[0])) == ex.references[0]
    assert "oracle" in repr(task)
    # the task's convenience log_prob is the oracle's continuation log-prob
    exs = task.examples("validation")[:20]
    got = task.log_prob([e.prompt for e in exs], [e.references[0] for e in exs])
    full = [(e.prompt + " " + e.references[0]).split() for e in exs]
    want = task.oracle.log_prob(full, prefix_lengths=np.full(len(exs), prompt_length))
    np.testing.assert_array_equal(got, want)
    assert np.all(np.isfinite(got))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="num_words must be >= 2"):
        make_oracle_task(num_words=1)
    with pytest.raises(ValueError, match="order must be >= 1"):
        make_oracle_task(order=0)
    with pytest.raises(ValueError, match="prompt_length must be >= 0"):
        make_oracle_task(prompt_length=-1)
    with pytest.raises(ValueError, match="prompt_length must be < max_length"):
        make_oracle_task(prompt_length=20, max_length=20)
    with pytest.raises(ValueError, match="concentration must be a finite number > 0"):
        make_oracle_task(concentration=0)
    with pytest.raises(ValueError, match="table"):
        OracleLM(num_words=200, order=4)
    oracle = OracleLM(num_words=4)
    with pytest.raises(ValueError, match=r"prefix_lengths\[b\] must lie in \[0, len\(sequence b\)\]"):
        oracle.log_prob(["w0 w1"], prefix_lengths=np.array([3]))
    with pytest.raises(ValueError, match=r"prefix_lengths must have shape \[B\] = \[1\]"):
        oracle.log_prob(["w0 w1"], prefix_lengths=np.array([0, 1]))
    task = make_oracle_task(num_words=4, num_examples=50)
    with pytest.raises(ValueError, match="needs an OracleLM"):
        OracleTask(name="oracle", splits=task.splits)
    with pytest.raises(ValueError, match="same length"):
        task.log_prob(["w0"], ["w1", "w2"])
