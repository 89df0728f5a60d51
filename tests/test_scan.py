"""Tests for the SCAN task (lmrl_gym.tasks.scan)."""

from __future__ import annotations

from collections import Counter

import pytest

from lmrl_gym.tasks.scan import (
    PUBLISHED_SIZES,
    SCAN_SPLITS,
    interpret,
    make_scan_task,
    scan_commands,
)

L, R = "I_TURN_LEFT", "I_TURN_RIGHT"
WALK, LOOK, RUN, JUMP = "I_WALK", "I_LOOK", "I_RUN", "I_JUMP"

# Published (train, test) sizes of github.com/brendenlake/SCAN, as recorded in the Hugging Face
# `datasets` SCAN script's dataset_infos.json and the TFDS `scan` catalog page. Kept literal here (not
# imported) so a wrong constant in the module cannot make these tests pass.
EXPECTED_SIZES = {
    "simple": (16_728, 4_182),
    "length": (16_990, 3_920),
    "addprim_jump": (14_670, 7_706),
}


def _seq(*parts: str | list[str]) -> str:
    out: list[str] = []
    for p in parts:
        out.extend([p] if isinstance(p, str) else p)
    return " ".join(out)


def _prompts(task, split: str) -> list[str]:
    return [ex.prompt for ex in task.examples(split)]


@pytest.fixture(scope="module")
def tasks():
    return {name: make_scan_task(name) for name in SCAN_SPLITS}


# ---------------------------------------------------------------------------------------- grammar


def test_command_count_and_vocabulary():
    commands = scan_commands()
    assert len(commands) == 20_910
    assert len(set(commands)) == 20_910
    assert commands == scan_commands()  # deterministic order
    words = {w for c in commands for w in c.split()}
    assert words == {
        "walk", "look", "run", "jump", "turn", "left", "right",
        "opposite", "around", "twice", "thrice", "and", "after",
    }  # fmt: skip
    assert max(len(c.split()) for c in commands) == 9
    assert sum(1 for c in commands if " and " not in c and " after " not in c) == 102
    # D[1] opposite D[2] only puts "opposite"/"around" between a head and a direction: never "left opposite"
    assert not any("left opposite" in c or "right around" in c for c in commands)


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("jump", JUMP),
        ("turn left", L),
        ("walk right", _seq(R, WALK)),
        ("look opposite left", _seq(L, L, LOOK)),
        ("turn opposite right", _seq(R, R)),
        ("turn around left", _seq([L] * 4)),
        ("run around right", _seq([R, RUN] * 4)),
        ("jump thrice", _seq(JUMP, JUMP, JUMP)),
        ("turn left twice", _seq(L, L)),
        ("turn opposite left thrice", _seq([L] * 6)),
        ("jump around left twice and walk opposite right", _seq([L, JUMP] * 8, R, R, WALK)),
        ("walk after run left", _seq(L, RUN, WALK)),
        ("jump opposite left and walk thrice", _seq(L, L, JUMP, WALK, WALK, WALK)),
        ("jump opposite left after walk around left", _seq([L, WALK] * 4, L, L, JUMP)),
        # The following are lines of the published release (tasks.txt), as quoted in public code.
        ("walk opposite right thrice after run opposite right", _seq(R, R, RUN, [R, R, WALK] * 3)),
        ("run right twice and walk opposite right twice", _seq(R, RUN, R, RUN, R, R, WALK, R, R, WALK)),
        ("look right twice after turn right", _seq(R, R, LOOK, R, LOOK)),
        ("jump after turn opposite right twice", _seq(R, R, R, R, JUMP)),
        ("look right and walk around right", _seq(R, LOOK, [R, WALK] * 4)),
        ("turn around right thrice after look around left thrice", _seq([L, LOOK] * 12, [R] * 12)),
    ],
)
def test_interpret_hand_checked(command, expected):
    assert interpret(command) == expected


def test_action_lengths():
    lengths = {c: len(interpret(c).split()) for c in scan_commands()}
    assert max(lengths.values()) == 48
    assert min(lengths.values()) == 1
    longest = [c for c, n in lengths.items() if n == 48]
    assert "jump around left thrice and walk around right thrice" in longest
    assert all(" around " in c and c.count("thrice") == 2 for c in longest)
    assert 23 not in lengths.values()  # so the length split's "<= 22" train threshold is unambiguous


@pytest.mark.parametrize(
    "bad",
    ["", "jump jump", "turn", "walk twice twice", "left walk", "jump and", "walk and run and look", "fly"],
)
def test_interpret_rejects_non_commands(bad):
    with pytest.raises(ValueError, match="is not a SCAN command"):
        interpret(bad)


# ---------------------------------------------------------------------------------------- splits


@pytest.mark.parametrize("split_name", SCAN_SPLITS)
def test_published_sizes(tasks, split_name):
    task = tasks[split_name]
    n_train, n_test = EXPECTED_SIZES[split_name]
    assert PUBLISHED_SIZES[split_name] == (n_train, n_test)
    sizes = {s: len(task.examples(s)) for s in ("train", "validation", "test")}
    assert sizes["train"] + sizes["validation"] == n_train
    assert sizes["test"] == n_test
    assert sizes["validation"] == round(0.1 * n_train)
    assert task.name == "scan" and task.level == "word"
    assert task.config["split_name"] == split_name


@pytest.mark.parametrize("split_name", SCAN_SPLITS)
def test_references_are_interpretations(tasks, split_name):
    for split in ("train", "validation", "test"):
        for ex in tasks[split_name].examples(split):
            assert ex.references == [interpret(ex.prompt)]


@pytest.mark.parametrize("split_name", ["simple", "length"])
def test_partition_of_all_commands(tasks, split_name):
    task = tasks[split_name]
    train_all = _prompts(task, "train") + _prompts(task, "validation")
    test = _prompts(task, "test")
    assert len(set(train_all)) == len(train_all)  # no repeats in these splits
    assert not set(train_all) & set(test)
    assert sorted(train_all + test) == sorted(scan_commands())


def test_length_split_threshold(tasks):
    task = tasks["length"]
    train_lengths = [
        len(ex.references[0].split()) for s in ("train", "validation") for ex in task.examples(s)
    ]
    test_lengths = [len(ex.references[0].split()) for ex in task.examples("test")]
    assert max(train_lengths) == 22
    assert min(test_lengths) == 24 and max(test_lengths) == 48


def test_addprim_jump_split(tasks):
    task = tasks["addprim_jump"]
    train, val, test = (_prompts(task, s) for s in ("train", "validation", "test"))
    counts = Counter(train + val)
    assert counts["jump"] == 14_670 - 13_203 == 1_467  # the primitive, repeated as in the release
    assert all(n == 1 for c, n in counts.items() if c != "jump")
    assert all("jump" not in c.split() for c in counts if c != "jump")  # jump only as the primitive
    assert "jump" not in val and train.count("jump") == 1_467  # repetitions stay in train
    assert all("jump" in c.split() for c in test)
    assert "jump" not in test and len(set(test)) == len(test)
    assert not set(counts) & set(test)
    assert set(counts) | set(test) == set(scan_commands())
    assert {"jump", "I_JUMP"} <= set(task.tokenizer.id_to_token)


def test_addprim_jump_large_fraction_keeps_jump_in_train():
    task = make_scan_task("addprim_jump", validation_fraction=0.95)
    train = _prompts(task, "train")
    assert train.count("jump") == 1_467
    assert set(train) == {"jump"}  # every jump-free command was carved out, and only those
    assert len(task.examples("validation")) == 13_203


# ---------------------------------------------------------------------------------------- seeds & args


def test_determinism_and_seed_effect():
    a = make_scan_task("simple", seed=3)
    b = make_scan_task("simple", seed=3)
    c = make_scan_task("simple", seed=4)
    for s in ("train", "validation", "test"):
        assert _prompts(a, s) == _prompts(b, s)
    assert set(_prompts(a, "validation")) != set(_prompts(c, "validation"))
    assert _prompts(a, "test") == _prompts(c, "test")  # the published test set does not move with the seed
    assert sorted(_prompts(a, "train") + _prompts(a, "validation")) == sorted(
        _prompts(c, "train") + _prompts(c, "validation")
    )


def test_zero_validation_fraction():
    task = make_scan_task("length", validation_fraction=0)
    assert task.examples("validation") == []
    assert len(task.examples("train")) == 16_990


def test_fraction_near_one_keeps_a_training_example():
    task = make_scan_task("simple", validation_fraction=0.99999)
    assert len(task.examples("train")) >= 1
    assert len(task.examples("train")) + len(task.examples("validation")) == 16_728


def test_unknown_split_raises():
    with pytest.raises(ValueError, match=r"unknown SCAN split 'mcd1'.*simple.*length.*addprim_jump"):
        make_scan_task("mcd1")


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5, float("nan")])
def test_bad_validation_fraction_raises(fraction):
    with pytest.raises(ValueError, match=r"validation_fraction must be in \[0, 1\)"):
        make_scan_task("simple", validation_fraction=fraction)
