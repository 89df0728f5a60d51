"""Tests for the copy / reverse / sort / addition tasks."""

from __future__ import annotations

import itertools

import pytest

from lmrl_gym.tasks.algorithmic import (
    make_addition_task,
    make_copy_task,
    make_reverse_task,
    make_sort_task,
)
from lmrl_gym.tasks.base import SPLITS

SEQUENCE_MAKERS = {
    "copy": (make_copy_task, lambda words: words),
    "reverse": (make_reverse_task, lambda words: words[::-1]),
    "sort": (make_sort_task, sorted),
}


def all_examples(task):
    return [ex for s in SPLITS for ex in task.examples(s)]


def prompts_by_split(task):
    return {s: [ex.prompt for ex in task.examples(s)] for s in SPLITS}


def assert_disjoint(task):
    by_split = {s: set(p) for s, p in prompts_by_split(task).items()}
    for a, b in itertools.combinations(SPLITS, 2):
        assert not by_split[a] & by_split[b], f"{a} and {b} share prompts"


@pytest.mark.parametrize("name", sorted(SEQUENCE_MAKERS))
def test_sequence_task_sizes_disjoint_and_distinct(name):
    make, _ = SEQUENCE_MAKERS[name]
    task = make(num_examples=1000, seed=3)
    assert task.name == name
    assert task.level == "word"
    assert [len(task.examples(s)) for s in SPLITS] == [800, 100, 100]
    prompts = [ex.prompt for ex in all_examples(task)]
    assert len(set(prompts)) == 1000
    assert_disjoint(task)
    assert task.config == {
        "num_symbols": 10,
        "min_length": 2,
        "max_length": 8,
        "num_examples": 1000,
        "seed": 3,
    }


def test_default_sizes():
    task = make_copy_task()
    assert [len(task.examples(s)) for s in SPLITS] == [4000, 500, 500]


@pytest.mark.parametrize("name", sorted(SEQUENCE_MAKERS))
def test_sequence_references_are_correct(name):
    make, transform = SEQUENCE_MAKERS[name]
    task = make(num_symbols=5, min_length=3, max_length=6, num_examples=500, seed=1)
    allowed = set("abcde")
    for ex in all_examples(task):
        words = ex.prompt.split()
        assert 3 <= len(words) <= 6
        assert set(words) <= allowed
        assert ex.references == [" ".join(transform(words))]


def test_given_example_pairs():
    # A concrete check independent of the transforms used above.
    ex = next(e for e in all_examples(make_reverse_task(4, 3, 3, 64)) if e.prompt == "c a d")
    assert ex.references == ["d a c"]
    ex = next(e for e in all_examples(make_sort_task(4, 3, 3, 64)) if e.prompt == "c a d")
    assert ex.references == ["a c d"]
    ex = next(e for e in all_examples(make_copy_task(4, 3, 3, 64)) if e.prompt == "c a d")
    assert ex.references == ["c a d"]


def test_sequence_lengths_cover_range():
    task = make_copy_task(num_symbols=3, min_length=1, max_length=6, num_examples=600, seed=0)
    lengths = {len(ex.prompt.split()) for ex in all_examples(task)}
    assert lengths == set(range(1, 7))
    # Length 1 has only 3 sequences, length 2 only 9: all of them are used, nothing repeated.
    assert sum(len(ex.prompt.split()) == 1 for ex in all_examples(task)) == 3


@pytest.mark.parametrize("name", sorted(SEQUENCE_MAKERS))
def test_enumerates_small_space(name):
    make, _ = SEQUENCE_MAKERS[name]
    task = make(num_symbols=6, min_length=3, max_length=3, num_examples=5000, seed=7)
    prompts = [ex.prompt for ex in all_examples(task)]
    expected = {" ".join(p) for p in itertools.product("abcdef", repeat=3)}
    assert len(prompts) == 216
    assert set(prompts) == expected
    assert [len(task.examples(s)) for s in SPLITS] == [173, 22, 21]
    assert_disjoint(task)


def test_enumeration_exactly_at_space_size():
    task = make_copy_task(num_symbols=6, min_length=3, max_length=3, num_examples=216)
    assert len(all_examples(task)) == 216
    # One fewer than the space: sampled, but still distinct.
    task = make_copy_task(num_symbols=6, min_length=3, max_length=3, num_examples=215)
    assert len({ex.prompt for ex in all_examples(task)}) == 215


def test_enumerated_splits_depend_on_seed_only():
    a = make_copy_task(6, 3, 3, 216, seed=0)
    b = make_copy_task(6, 3, 3, 999, seed=0)
    c = make_copy_task(6, 3, 3, 216, seed=1)
    assert prompts_by_split(a) == prompts_by_split(b)
    assert set(prompts_by_split(a)["test"]) != set(prompts_by_split(c)["test"])


@pytest.mark.parametrize(
    "make",
    [make_copy_task, make_reverse_task, make_sort_task, lambda **kw: make_addition_task(2, **kw)],
)
def test_determinism_by_seed(make):
    a = make(num_examples=300, seed=11)
    b = make(num_examples=300, seed=11)
    c = make(num_examples=300, seed=12)
    assert {s: a.examples(s) for s in SPLITS} == {s: b.examples(s) for s in SPLITS}
    assert a.tokenizer == b.tokenizer
    assert {ex.prompt for ex in all_examples(a)} != {ex.prompt for ex in all_examples(c)}


def test_addition_references_are_sums():
    task = make_addition_task(max_digits=3, num_examples=2000, seed=5)
    assert task.name == "addition"
    assert task.config == {"max_digits": 3, "num_examples": 2000, "seed": 5}
    assert [len(task.examples(s)) for s in SPLITS] == [1600, 200, 200]
    assert_disjoint(task)
    for ex in all_examples(task):
        left, plus, right = ex.prompt.partition(" + ")
        assert plus
        digits_a, digits_b = left.split(), right.split()
        for digits in (digits_a, digits_b):
            assert 1 <= len(digits) <= 3
            assert all(len(d) == 1 and d.isdigit() for d in digits)
            assert digits == ["0"] or digits[0] != "0"  # no leading zeros
        total = int("".join(digits_a)) + int("".join(digits_b))
        assert ex.references == [" ".join(str(total))]


def test_addition_example_pair_and_vocabulary():
    task = make_addition_task(max_digits=2, num_examples=10_000, seed=0)
    examples = {ex.prompt: ex.references for ex in all_examples(task)}
    assert len(examples) == 10_000  # every pair enumerated
    assert examples["1 2 + 3 4"] == ["4 6"]
    assert examples["9 9 + 9 9"] == ["1 9 8"]
    assert examples["0 + 0"] == ["0"]
    tokens = set(task.tokenizer.id_to_token[4:])
    assert tokens == set("0123456789") | {"+"}


def test_addition_large_digits():
    task = make_addition_task(max_digits=18, num_examples=50, seed=0)
    for ex in all_examples(task):
        a, b = ("".join(side.split()) for side in ex.prompt.split(" + "))
        assert ex.references == [" ".join(str(int(a) + int(b)))]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_symbols": 1}, r"num_symbols must be between 2 and 26, got 1"),
        ({"num_symbols": 27}, r"num_symbols must be between 2 and 26, got 27"),
        ({"num_symbols": 2.5}, r"num_symbols must be an integer, got 2\.5"),
        ({"min_length": 0}, r"min_length must be >= 1, got 0"),
        ({"min_length": 5, "max_length": 4}, r"max_length must be >= min_length \(5\), got 4"),
        ({"num_examples": 0}, r"num_examples must be >= 1, got 0"),
        ({"seed": "x"}, r"seed must be an integer, got 'x'"),
        ({"seed": True}, r"seed must be an integer, got True"),
    ],
)
@pytest.mark.parametrize("make", [make_copy_task, make_reverse_task, make_sort_task])
def test_sequence_bad_arguments(make, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_digits": 0}, r"max_digits must be between 1 and 18, got 0"),
        ({"max_digits": 19}, r"max_digits must be between 1 and 18, got 19"),
        ({"max_digits": "3"}, r"max_digits must be an integer, got '3'"),
        ({"num_examples": -1}, r"num_examples must be >= 1, got -1"),
        ({"seed": 1.0}, r"seed must be an integer, got 1\.0"),
    ],
)
def test_addition_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_addition_task(**kwargs)


@pytest.mark.parametrize("make", [make_copy_task, make_reverse_task, make_sort_task, make_addition_task])
def test_docstrings_follow_env_doc_style(make):
    doc = make.__doc__
    for heading in (
        "## Description",
        "## Splits",
        "## Arguments",
        "## Version History",
        "v0: initial version",
    ):
        assert heading in doc
