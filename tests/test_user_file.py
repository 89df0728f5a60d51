"""Tests for tasks built from the user's own examples and files."""

from __future__ import annotations

import itertools
import json

import pytest

from lmrl_gym.tasks.base import SPLITS, Example
from lmrl_gym.tasks.user_file import load_examples_file, make_examples_task, make_file_task


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(rows):
    return "".join(json.dumps(r) + "\n" for r in rows)


def all_examples(task):
    return [ex for s in SPLITS for ex in task.examples(s)]


def assert_disjoint(task):
    prompts = {s: {ex.prompt for ex in task.examples(s)} for s in SPLITS}
    for a, b in itertools.combinations(SPLITS, 2):
        assert not prompts[a] & prompts[b]


# ------------------------------------------------------------------------------ make_examples_task


def test_examples_in_every_form():
    task = make_examples_task(
        [
            Example("one", ["un"]),
            ("two", "deux"),
            ("three", ["trois", "3"]),
            {"prompt": "four", "references": ["quatre"]},
            {"prompt": "five", "reference": "cinq"},
        ],
        name="mine",
        fractions=(1.0, 0.0, 0.0),
    )
    assert task.name == "mine"
    assert task.examples("train") == [
        Example("one", ["un"]),
        Example("two", ["deux"]),
        Example("three", ["trois", "3"]),
        Example("four", ["quatre"]),
        Example("five", ["cinq"]),
    ]
    assert task.examples("validation") == task.examples("test") == []
    assert "quatre" in task.tokenizer.token_to_id


def test_examples_carved_deterministically_and_disjoint():
    pairs = [(f"prompt {i}", f"ref {i}") for i in range(200)]
    # The same prompt twice with different references: must land in one split.
    pairs += [("prompt 7", "other ref")]
    a = make_examples_task(pairs, seed=1)
    b = make_examples_task(list(reversed(pairs)), seed=1)
    c = make_examples_task(pairs, seed=2)
    assert [len(a.examples(s)) for s in SPLITS] in ([161, 20, 20], [160, 21, 20], [160, 20, 21])
    assert_disjoint(a)
    for s in SPLITS:
        assert {e.prompt for e in a.examples(s)} == {e.prompt for e in b.examples(s)}
    assert {e.prompt for e in a.examples("test")} != {e.prompt for e in c.examples("test")}
    assert a.config == {"level": "word", "seed": 1, "fractions": (0.8, 0.1, 0.1)}


def test_examples_fractions_respected():
    task = make_examples_task([(str(i), "x") for i in range(100)], fractions=(0.5, 0.25, 0.25))
    assert [len(task.examples(s)) for s in SPLITS] == [50, 25, 25]


def test_examples_duplicates_dropped():
    task = make_examples_task([("a", "b")] * 3 + [("c", "d")], fractions=(1, 0, 0))
    assert task.examples("train") == [Example("a", ["b"]), Example("c", ["d"])]


def test_examples_given_splits_dict():
    task = make_examples_task(
        {"train": [("a", "x"), ("b", "y")], "test": [{"prompt": "c", "reference": "z"}]},
        level="char",
    )
    assert [e.prompt for e in task.examples("train")] == ["a", "b"]
    assert task.examples("validation") == []
    assert [e.prompt for e in task.examples("test")] == ["c"]
    assert task.tokenizer.level == "char"


def test_examples_split_field_in_dicts():
    task = make_examples_task(
        [
            {"prompt": "a", "reference": "x", "split": "test"},
            {"prompt": "b", "reference": "y", "split": "train"},
        ]
    )
    assert [e.prompt for e in task.examples("train")] == ["b"]
    assert [e.prompt for e in task.examples("test")] == ["a"]


@pytest.mark.parametrize(
    ("examples", "match"),
    [
        ([], r"examples holds no examples"),
        ("abc", r"examples must be a list of examples"),
        (5, r"examples must be a list of examples .* got int"),
        ([3], r"examples\[0\]: an example must be an Example"),
        ([("a", "b"), ("a",)], r"examples\[1\]: an example must be"),
        ([("a", [])], r"examples\[0\]: references is empty"),
        ([("a", ["ok", 3])], r"examples\[0\]: references\[1\] must be a string, got int"),
        ([("a", "  ")], r"examples\[0\]: the reference is empty"),
        ([(1, "b")], r"examples\[0\]: 'prompt' must be a string, got int"),
        ([{"reference": "b"}], r"examples\[0\]: missing 'prompt'"),
        ([{"prompt": "a"}], r"examples\[0\]: missing 'references'"),
        ([{"prompt": "a", "references": "b"}], r"'references' must be a list of strings, got str"),
        ([{"prompt": "a", "reference": "b", "references": ["c"]}], r"not both"),
        ([{"prompt": "a", "reference": "b", "split": "dev"}], r"unknown split 'dev'; allowed: 'train'"),
        (
            [("a", "b"), {"prompt": "c", "reference": "d", "split": "train"}],
            r"examples\[0\]: no split given, but examples\[1\] has split 'train'",
        ),
        ({"val": []}, r"keys must be split names .* unknown keys \['val'\]"),
        ({"train": "ab"}, r"examples\['train'\] must be a list of examples"),
        ({"test": [("a", "b")]}, r"no example has split 'train'"),
        (
            {"train": [("a", "b")], "validation": [("a", "c")]},
            r"examples\['validation'\]\[0\]: prompt 'a' is in split 'validation' but examples\['train'\]\[0\]",
        ),
        (
            {"train": [{"prompt": "a", "reference": "b", "split": "test"}]},
            r"has split 'test' but is listed under 'train'",
        ),
    ],
)
def test_examples_rejected(examples, match):
    with pytest.raises(ValueError, match=match):
        make_examples_task(examples)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": ""}, r"name must be a non-empty string, got ''"),
        ({"level": "byte"}, r"level must be one of \['word', 'char'\], got 'byte'"),
        ({"seed": 0.5}, r"seed must be an integer, got 0\.5"),
        ({"fractions": (0.5, 0.5)}, r"fractions must be three non-negative numbers"),
        ({"fractions": (0.8, 0.3, -0.1)}, r"fractions must be .* got \(0\.8, 0\.3, -0\.1\)"),
        ({"fractions": (0.5, 0.1, 0.1)}, r"summing to 1"),
        ({"fractions": (0.0, 0.5, 0.5)}, r"positive train fraction"),
    ],
)
def test_examples_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_examples_task([("a", "b")], **kwargs)


# ---------------------------------------------------------------------------------- JSON Lines files


def test_jsonl_file_loaded(tmp_path):
    path = write(
        tmp_path / "data.jsonl",
        jsonl([{"prompt": "a b", "references": ["x", "y"]}, {"prompt": "c", "reference": "z", "id": 3}])
        + "\n   \n",
    )
    examples, splits = load_examples_file(path)
    assert examples == [Example("a b", ["x", "y"]), Example("c", ["z"])]
    assert splits == [None, None]


def test_json_suffix_is_json_lines(tmp_path):
    path = write(tmp_path / "data.JSON", jsonl([{"prompt": "a", "reference": "b"}]))
    assert load_examples_file(path) == ([Example("a", ["b"])], [None])


def test_jsonl_file_task_carved(tmp_path):
    rows = [{"prompt": f"p {i}", "references": [f"r {i}"]} for i in range(100)]
    path = write(tmp_path / "data.jsonl", jsonl(rows))
    task = make_file_task(path, seed=3)
    assert task.name == "file"
    assert task.config == {"path": str(path), "level": "word", "seed": 3, "fractions": (0.8, 0.1, 0.1)}
    assert [len(task.examples(s)) for s in SPLITS] == [80, 10, 10]
    assert_disjoint(task)
    again = make_file_task(str(path), seed=3)
    assert {s: again.examples(s) for s in SPLITS} == {s: task.examples(s) for s in SPLITS}
    other = make_file_task(path, seed=4)
    assert {e.prompt for e in other.examples("test")} != {e.prompt for e in task.examples("test")}
    assert "r" in task.tokenizer.token_to_id


def test_jsonl_given_splits_respected(tmp_path):
    rows = [
        {"prompt": "a", "reference": "1", "split": "train"},
        {"prompt": "b", "reference": "2", "split": "test"},
        {"prompt": "c", "reference": "3", "split": "train"},
        {"prompt": "c", "reference": "3", "split": "train"},  # duplicate row: dropped
    ]
    path = write(tmp_path / "data.jsonl", jsonl(rows))
    examples, splits = load_examples_file(path)
    assert splits == ["train", "test", "train", "train"]
    task = make_file_task(path, seed=123, fractions=(0.1, 0.1, 0.8))
    assert [e.prompt for e in task.examples("train")] == ["a", "c"]
    assert task.examples("validation") == []  # an empty validation split is allowed
    assert [e.prompt for e in task.examples("test")] == ["b"]


def test_jsonl_byte_order_mark(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + jsonl([{"prompt": "a", "reference": "b"}]).encode())
    assert load_examples_file(path)[0] == [Example("a", ["b"])]


@pytest.mark.parametrize(
    ("lines", "line", "problem"),
    [
        (['{"prompt": "a", "reference": "b"', ""], 1, r"invalid JSON"),
        (['{"prompt": "a", "reference": "b"}', "", '{"prompt": "a" "reference"}'], 3, r"invalid JSON"),
        (['["a", "b"]'], 1, r"expected a JSON object.*got list.*JSON Lines"),
        (["[", '  {"prompt": "a", "reference": "b"}', "]"], 1, r"invalid JSON.*not a JSON array"),
        (['{"prompt": "a", "reference": "b"}', '"just a string"'], 2, r"expected a JSON object.*got str"),
        (['{"prompt": "a", "reference": "b"}', '{"references": ["b"]}'], 2, r"missing 'prompt'"),
        (['{"prompt": 5, "reference": "b"}'], 1, r"'prompt' must be a string, got int"),
        (['{"prompt": null, "reference": "b"}'], 1, r"'prompt' must be a string, got NoneType"),
        (['{"prompt": "a", "reference": "b"}', '{"prompt": "a"}'], 2, r"missing 'references'"),
        (['{"prompt": "a", "references": []}'], 1, r"references is empty"),
        (['{"prompt": "a", "reference": ""}'], 1, r"'reference' is empty"),
        (['{"prompt": "a", "references": ["x", 2]}'], 1, r"references\[1\] must be a string, got int"),
        (['{"prompt": "a", "reference": 7}'], 1, r"'reference' must be a string, got int"),
        (['{"prompt": "a", "references": "x"}'], 1, r"'references' must be a list of strings, got str"),
        (['{"prompt": "a", "reference": "b", "split": "dev"}'], 1, r"unknown split 'dev'"),
    ],
)
def test_jsonl_malformed(tmp_path, lines, line, problem):
    path = write(tmp_path / "bad.jsonl", "\n".join(lines) + "\n")
    pattern = rf"bad\.jsonl: line {line}: .*{problem}"
    with pytest.raises(ValueError, match=pattern):
        load_examples_file(path)
    with pytest.raises(ValueError, match=pattern):
        make_file_task(path)


def test_jsonl_line_numbers_count_crlf_and_blank_lines(tmp_path):
    path = tmp_path / "crlf.jsonl"
    good = '{"prompt": "a", "reference": "b"}'
    path.write_bytes(f"{good}\r\n\r\n{good}\r\n{{oops\r\n".encode())
    with pytest.raises(ValueError, match=r"crlf\.jsonl: line 4: invalid JSON"):
        load_examples_file(path)


def test_invalid_utf8_names_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"prompt": "a", "reference": "b"}\n{"prompt": "caf\xe9", "reference": "b"}\n')
    with pytest.raises(ValueError, match=r"latin1\.jsonl: line 2: not valid UTF-8"):
        load_examples_file(path)


def test_mixed_splits_name_first_line_without(tmp_path):
    rows = [
        {"prompt": "a", "reference": "1", "split": "train"},
        {"prompt": "b", "reference": "2", "split": "test"},
        {"prompt": "c", "reference": "3"},
        {"prompt": "d", "reference": "4"},
    ]
    path = write(tmp_path / "mixed.jsonl", jsonl(rows))
    assert load_examples_file(path)[1] == ["train", "test", None, None]
    with pytest.raises(ValueError, match=r"mixed\.jsonl: line 3: no split given, but line 1 has split"):
        make_file_task(path)


def test_given_splits_need_train(tmp_path):
    rows = [{"prompt": "a", "reference": "1", "split": "test"}]
    path = write(tmp_path / "notrain.jsonl", jsonl(rows))
    with pytest.raises(ValueError, match=r"notrain\.jsonl: no example has split 'train'"):
        make_file_task(path)


def test_given_splits_must_not_share_prompts(tmp_path):
    rows = [
        {"prompt": "a", "reference": "1", "split": "train"},
        {"prompt": "b", "reference": "2", "split": "train"},
        {"prompt": "a", "reference": "1", "split": "validation"},
    ]
    path = write(tmp_path / "leak.jsonl", jsonl(rows))
    with pytest.raises(
        ValueError, match=r"leak\.jsonl: line 3: prompt 'a' is in split 'validation' but line 1"
    ):
        make_file_task(path)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file(tmp_path, suffix, content):
    path = write(tmp_path / f"empty{suffix}", content)
    with pytest.raises(ValueError, match=r"empty\.(jsonl|csv): the file (is empty|holds no examples)"):
        make_file_task(path)


def test_csv_header_only_is_empty(tmp_path):
    path = write(tmp_path / "head.csv", "prompt,reference\n")
    with pytest.raises(ValueError, match=r"head\.csv: the file holds no examples"):
        load_examples_file(path)


@pytest.mark.parametrize("name", ["data.txt", "data.tsv", "data"])
def test_unknown_suffix(tmp_path, name):
    path = write(tmp_path / name, jsonl([{"prompt": "a", "reference": "b"}]))
    with pytest.raises(ValueError, match=r"allowed suffixes: \.jsonl, \.json, \.csv"):
        make_file_task(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        make_file_task(tmp_path / "nope.jsonl")


def test_file_task_bad_arguments(tmp_path):
    path = write(tmp_path / "d.jsonl", jsonl([{"prompt": "a", "reference": "b"}]))
    with pytest.raises(ValueError, match=r"level must be one of"):
        make_file_task(path, level="token")
    with pytest.raises(ValueError, match=r"fractions must be"):
        make_file_task(path, fractions=(1, 1, 1))
    with pytest.raises(ValueError, match=r"path must be a str or os\.PathLike, got int"):
        make_file_task(3)


# ------------------------------------------------------------------------------------------ CSV files


def test_csv_multi_reference(tmp_path):
    path = write(
        tmp_path / "data.csv",
        "id,Prompt,reference,reference_2,references_extra\n"
        "1,hello there,bonjour,salut,\n"
        '2,"a, quoted prompt","une, réponse",,autre\n'
        "\n"
        "3,bye,au revoir,,\n",
    )
    examples, splits = load_examples_file(path)
    assert examples == [
        Example("hello there", ["bonjour", "salut"]),
        Example("a, quoted prompt", ["une, réponse", "autre"]),
        Example("bye", ["au revoir"]),
    ]
    assert splits == [None, None, None]
    task = make_file_task(path, fractions=(1, 0, 0))
    assert task.examples("train") == examples
    assert task.config["path"] == str(path)


def test_csv_given_splits(tmp_path):
    path = write(
        tmp_path / "data.csv",
        "prompt,reference,split\na,1,train\nb,2,validation\nc,3,test\nd,4,train\n",
    )
    assert load_examples_file(path)[1] == ["train", "validation", "test", "train"]
    task = make_file_task(path, seed=99)
    assert {s: [e.prompt for e in task.examples(s)] for s in SPLITS} == {
        "train": ["a", "d"],
        "validation": ["b"],
        "test": ["c"],
    }


def test_csv_carved_splits(tmp_path):
    body = "".join(f"prompt {i},ref {i}\n" for i in range(50))
    path = write(tmp_path / "data.csv", "prompt,reference\n" + body)
    task = make_file_task(path, seed=5)
    assert [len(task.examples(s)) for s in SPLITS] == [40, 5, 5]
    assert_disjoint(task)


def test_csv_multiline_record_line_numbers(tmp_path):
    path = write(
        tmp_path / "data.csv",
        'prompt,reference\n"two\nlines",ok\nc,d,e\n',
    )
    with pytest.raises(ValueError, match=r"data\.csv: line 4: wrong number of fields: 3.* has 2"):
        load_examples_file(path)


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("prompt,reference\na,b\nc,d,e\n", 3, r"wrong number of fields: 3, but the header \(line 1\) has 2"),
        ("prompt,reference\na,b\nc\n", 3, r"wrong number of fields: 1"),
        ("question,reference\na,b\n", 1, r"no 'prompt' column"),
        ("prompt,answer\na,b\n", 1, r"no reference column"),
        ("prompt,prompt,reference\na,b,c\n", 1, r"repeats the 'prompt' or 'split' column"),
        ("prompt,reference,reference_2\na,b,c\nd,,\n", 3, r"no reference: every reference column"),
        ("prompt,reference,split\na,b,train\nc,d,dev\n", 3, r"unknown split 'dev'; allowed"),
        ('prompt,reference\na,b\n"c,d\ne,f\n', 3, r"wrong number of fields.*quote unclosed"),
        ("\n\nprompt,reference\na,b\nc;d\n", 5, r"wrong number of fields"),
    ],
)
def test_csv_malformed(tmp_path, text, line, problem):
    path = write(tmp_path / "bad.csv", text)
    pattern = rf"bad\.csv: line {line}: .*{problem}"
    with pytest.raises(ValueError, match=pattern):
        load_examples_file(path)
    with pytest.raises(ValueError, match=pattern):
        make_file_task(path)


def test_csv_mixed_splits(tmp_path):
    path = write(tmp_path / "mixed.csv", "prompt,reference,split\na,b,train\nc,d,\ne,f,test\n")
    assert load_examples_file(path)[1] == ["train", None, "test"]
    with pytest.raises(ValueError, match=r"mixed\.csv: line 3: no split given, but line 2 has split 'train'"):
        make_file_task(path)


def test_docstrings_follow_env_doc_style():
    for fn in (make_examples_task, make_file_task):
        for heading in ("## Description", "## Splits", "## Arguments", "## Version History", "v0: initial"):
            assert heading in fn.__doc__
