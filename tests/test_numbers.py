"""Tests for the number-translation task built from num2words."""

from __future__ import annotations

import itertools
import random

import pytest
from num2words import num2words

from lmrl_gym.tasks.base import SPLITS
from lmrl_gym.tasks.numbers import make_numbers_task


@pytest.fixture(scope="module")
def default_task():
    return make_numbers_task()


def all_examples(task):
    return [ex for s in SPLITS for ex in task.examples(s)]


def numbers_by_split(task, source_lang, max_number):
    number_of = {num2words(n, lang=source_lang): n for n in range(max_number + 1)}
    return {s: [number_of[ex.prompt] for ex in task.examples(s)] for s in SPLITS}


def test_default_task(default_task):
    task = default_task
    assert task.name == "numbers"
    assert task.level == "word"
    assert task.config == {"target_lang": "fr", "source_lang": "en", "max_number": 9999, "seed": 0}
    assert [len(task.examples(s)) for s in SPLITS] == [8000, 1000, 1000]
    refs = {ex.prompt: ex.references for ex in all_examples(task)}
    assert refs["seventy-one"] == ["soixante et onze"]
    assert refs["zero"] == ["zéro"]


def test_default_splits_disjoint_and_cover_all_numbers(default_task):
    by_split = numbers_by_split(default_task, "en", 9999)
    sets = {s: set(v) for s, v in by_split.items()}
    for a, b in itertools.combinations(SPLITS, 2):
        assert not sets[a] & sets[b]
    assert sorted(n for v in by_split.values() for n in v) == list(range(10_000))


def test_references_match_num2words_french(default_task):
    refs = {ex.prompt: ex.references for ex in all_examples(default_task)}
    for n in random.Random(0).sample(range(10_000), 200):
        assert refs[num2words(n, lang="en")] == [num2words(n, lang="fr")]


def test_references_match_num2words_german():
    task = make_numbers_task(target_lang="de", max_number=999, seed=2)
    refs = {ex.prompt: ex.references for ex in all_examples(task)}
    assert len(refs) == 1000
    for n in random.Random(1).sample(range(1000), 100):
        assert refs[num2words(n, lang="en")] == [num2words(n, lang="de")]
    assert refs["seventy-one"] == ["einundsiebzig"]


def test_other_source_language():
    task = make_numbers_task(target_lang="en", source_lang="fr", max_number=100)
    refs = {ex.prompt: ex.references for ex in all_examples(task)}
    assert refs["soixante et onze"] == ["seventy-one"]
    assert task.config["source_lang"] == "fr"


def test_word_level_tokens_keep_hyphens(default_task):
    tok = default_task.tokenizer
    assert tok.level == "word"
    assert tok.tokenize("seventy-one") == ["seventy-one"]
    train_words = {w for ex in default_task.examples("train") for w in ex.prompt.split()}
    hyphenated = {w for w in train_words if "-" in w}
    assert hyphenated  # e.g. "twenty-one"
    assert all(w in tok.token_to_id for w in hyphenated)
    assert tok.encode("soixante et onze") == [tok.token_to_id[w] for w in ("soixante", "et", "onze")]


def test_determinism_and_seed_changes_split():
    a = make_numbers_task("de", max_number=500, seed=4)
    b = make_numbers_task("de", max_number=500, seed=4)
    c = make_numbers_task("de", max_number=500, seed=5)
    assert {s: a.examples(s) for s in SPLITS} == {s: b.examples(s) for s in SPLITS}
    assert a.tokenizer == b.tokenizer
    assert numbers_by_split(a, "en", 500)["test"] != numbers_by_split(c, "en", 500)["test"]
    for task in (a, c):
        by_split = numbers_by_split(task, "en", 500)
        assert sorted(n for v in by_split.values() for n in v) == list(range(501))
        assert [len(v) for v in by_split.values()] == [401, 50, 50]


def test_small_max_number():
    task = make_numbers_task(max_number=0)
    assert [ex.prompt for ex in task.examples("train")] == ["zero"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"target_lang": "xx"}, r"target_lang must be a language code num2words supports.*'en'.*got 'xx'"),
        ({"source_lang": "klingon"}, r"source_lang must be .*'fr'.*got 'klingon'"),
        ({"target_lang": 3}, r"target_lang must be .* got 3"),
        ({"target_lang": "en"}, r"both 'en': nothing to translate"),
        ({"max_number": -1}, r"max_number must be >= 0, got -1"),
        ({"max_number": 10.0}, r"max_number must be an integer, got 10\.0"),
        ({"max_number": False}, r"max_number must be an integer, got False"),
        ({"seed": "0"}, r"seed must be an integer, got '0'"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_numbers_task(**kwargs)


def test_number_a_language_cannot_spell_is_reported(monkeypatch):
    # num2words cannot spell every number in every language; the failure names the number.
    import lmrl_gym.tasks.numbers as numbers_module

    def flaky(n, lang):
        if lang == "de" and n == 42:
            raise TypeError("cannot unpack non-iterable NoneType object")
        return num2words(n, lang=lang)

    monkeypatch.setattr(numbers_module, "num2words", flaky)
    with pytest.raises(ValueError, match=r"cannot spell 42 in language 'de'.*max_number below 42"):
        make_numbers_task(target_lang="de", max_number=100)
    assert len(all_examples(make_numbers_task(target_lang="de", max_number=41))) == 42


def test_whitespace_is_normalised(monkeypatch):
    import lmrl_gym.tasks.numbers as numbers_module

    monkeypatch.setattr(numbers_module, "num2words", lambda n, lang: f" {lang}  {n} ")
    task = make_numbers_task(target_lang="de", max_number=3)
    assert {ex.prompt: ex.references for ex in all_examples(task)}["en 2"] == ["de 2"]


def test_docstring_follows_env_doc_style():
    doc = make_numbers_task.__doc__
    for heading in (
        "## Description",
        "## Splits",
        "## Arguments",
        "## Version History",
        "v0: initial version",
    ):
        assert heading in doc
