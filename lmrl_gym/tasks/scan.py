"""SCAN: compositional navigation commands mapped to action sequences (Lake & Baroni, 2018).

Everything is generated in code from the grammar and interpretation function of the paper (its
Figure 6 / appendix); nothing is downloaded. The grammar is::

    C -> S and S | S after S | S
    S -> V twice | V thrice | V
    V -> D[1] opposite D[2] | D[1] around D[2] | D | U
    D -> U left | U right | turn left | turn right
    U -> walk | look | run | jump

where ``D[1]`` / ``D[2]`` are the first / second word of a ``D`` (so ``V -> D[1] opposite D[2]`` yields
e.g. "jump opposite left" or "turn opposite right"). That gives 4 + 10 + 20 = 34 ``V``, 3 * 34 = 102
``S`` and 102 + 2 * 102**2 = 20,910 distinct commands ``C``; the longest action sequence is
"x around left thrice and y around right thrice" with 2 * 3 * 8 = 48 actions.

The published train / test sizes reproduced here are those of the release at
https://github.com/brendenlake/SCAN, as recorded (with the raw files' checksums) in the Hugging Face
``datasets`` loading script's ``datasets/scan/dataset_infos.json`` and in the TensorFlow Datasets catalog
page ``scan``: simple 16,728 / 4,182, length 16,990 / 3,920, addprim_jump 14,670 / 7,706.
"""

from __future__ import annotations

import functools
import math

from lmrl_gym.tasks.base import Example, Task, stable_hash

SCAN_SPLITS = ("simple", "length", "addprim_jump")

# Published (train, test) sizes of the SCAN release (github.com/brendenlake/SCAN); sources in the module
# docstring. ``make_scan_task`` checks its generated splits against these.
PUBLISHED_SIZES: dict[str, tuple[int, int]] = {
    "simple": (16_728, 4_182),
    "length": (16_990, 3_920),
    "addprim_jump": (14_670, 7_706),
}

NUM_COMMANDS = 20_910
MAX_ACTIONS = 48
# Length split: train on action sequences of at most 22 actions, test on the longer ones (24 to 48; no
# command has exactly 23 actions, so a threshold of 22 or 23 gives the same published 16,990 / 3,920).
LENGTH_SPLIT_MAX_TRAIN_ACTIONS = 22
# addprim_jump: the release's train file holds the 13,203 commands without "jump" plus the primitive
# command "jump" repeated 14,670 - 13,203 = 1,467 times (so that it is seen often enough in training).
ADDPRIM_JUMP_REPEATS = 1_467

# The simple split is a random 80/20 draw in the release; we cannot reproduce *which* commands were
# drawn, only how many, so we draw with this fixed seed (independent of ``make_scan_task``'s ``seed``)
# so that the test set is the same for every seed, as a published test set is.
_SIMPLE_SPLIT_SEED = 20_180_710

_PRIMITIVES = {"walk": "I_WALK", "look": "I_LOOK", "run": "I_RUN", "jump": "I_JUMP"}
_DIRECTIONS = {"left": "I_TURN_LEFT", "right": "I_TURN_RIGHT"}
_REPEATS = {"twice": 2, "thrice": 3}
_CONJUNCTIONS = ("and", "after")
_VALID_COMMAND_HELP = "see lmrl_gym.tasks.scan for the grammar"


# --------------------------------------------------------------------------------------------------
# Grammar and interpretation
# --------------------------------------------------------------------------------------------------


def _verb_phrases() -> list[str]:
    """All 34 ``V`` phrases, in grammar order."""
    phrases = list(_PRIMITIVES)  # V -> U
    for head in (*_PRIMITIVES, "turn"):  # D -> U left | U right | turn left | turn right
        for direction in _DIRECTIONS:
            phrases.append(f"{head} {direction}")
    for head in (*_PRIMITIVES, "turn"):  # V -> D[1] opposite D[2] | D[1] around D[2]
        for modifier in ("opposite", "around"):
            for direction in _DIRECTIONS:
                phrases.append(f"{head} {modifier} {direction}")
    return phrases


def _sentences() -> list[str]:
    """All 102 ``S`` phrases: each ``V`` alone, twice and thrice."""
    return [f"{v}{suffix}" for v in _verb_phrases() for suffix in ("", " twice", " thrice")]


@functools.lru_cache(maxsize=1)
def _all_commands() -> tuple[str, ...]:
    sentences = _sentences()
    commands = list(sentences)  # C -> S
    for conjunction in _CONJUNCTIONS:  # C -> S and S | S after S
        commands.extend(f"{a} {conjunction} {b}" for a in sentences for b in sentences)
    return tuple(commands)


def scan_commands() -> list[str]:
    """All 20,910 SCAN commands, in a fixed order: the 102 ``S``, then every ``S and S``, then every ``S after S``
    (each block in grammar order)."""
    return list(_all_commands())


def _interpret_verb(words: list[str], command: str) -> list[str]:
    if len(words) == 1 and words[0] in _PRIMITIVES:  # U
        return [_PRIMITIVES[words[0]]]
    if len(words) in (2, 3) and (words[0] in _PRIMITIVES or words[0] == "turn") and words[-1] in _DIRECTIONS:
        turn = _DIRECTIONS[words[-1]]
        act = [] if words[0] == "turn" else [_PRIMITIVES[words[0]]]
        if len(words) == 2:  # D: "x left" -> turn, x ("turn left" -> turn)
            return [turn, *act]
        if words[1] == "opposite":  # turn twice, then x ("turn opposite left" -> turn turn)
            return [turn, turn, *act]
        if words[1] == "around":  # (turn, x) four times ("turn around left" -> turn * 4)
            return [turn, *act] * 4
    raise ValueError(
        f"{command!r} is not a SCAN command: {' '.join(words)!r} is not a verb phrase; {_VALID_COMMAND_HELP}"
    )


def _interpret_sentence(words: list[str], command: str) -> list[str]:
    if words and words[-1] in _REPEATS:
        return _interpret_verb(words[:-1], command) * _REPEATS[words[-1]]
    return _interpret_verb(words, command)


@functools.lru_cache(maxsize=32_768)
def _interpret_tuple(command: str) -> tuple[str, ...]:
    words = command.split()
    positions = [i for i, w in enumerate(words) if w in _CONJUNCTIONS]
    if len(positions) > 1:
        raise ValueError(
            f"{command!r} is not a SCAN command: more than one 'and' / 'after'; {_VALID_COMMAND_HELP}"
        )
    if not positions:
        return tuple(_interpret_sentence(words, command))
    i = positions[0]
    first = _interpret_sentence(words[:i], command)
    second = _interpret_sentence(words[i + 1 :], command)
    # "a and b" -> a b; "a after b" -> b a
    return tuple(first + second if words[i] == "and" else second + first)


def interpret(command: str) -> str:
    """The action sequence of a SCAN ``command``, as space-separated action tokens.

    >>> interpret("jump opposite left after walk around right twice")
    'I_TURN_RIGHT I_WALK I_TURN_RIGHT I_WALK I_TURN_RIGHT I_WALK I_TURN_RIGHT I_WALK I_TURN_RIGHT I_WALK I_TURN_RIGHT I_WALK I_TURN_RIGHT I_WALK I_TURN_RIGHT I_WALK I_TURN_LEFT I_TURN_LEFT I_JUMP'

    :raises ValueError: if ``command`` is not generated by the SCAN grammar.
    """
    if not isinstance(command, str):
        raise TypeError(f"interpret expects a str, got {type(command).__name__}")
    return " ".join(_interpret_tuple(command))


def _num_actions(command: str) -> int:
    return len(_interpret_tuple(command))


# --------------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------------


def _published_split(split_name: str) -> tuple[list[str], list[str], set[str]]:
    """(train commands as a multiset, test commands, train commands that must stay in train)."""
    commands = _all_commands()
    if split_name == "simple":
        ordered = sorted(commands, key=lambda c: stable_hash(c, _SIMPLE_SPLIT_SEED))
        train_set = set(ordered[: PUBLISHED_SIZES["simple"][0]])
        train = [c for c in commands if c in train_set]
        test = [c for c in commands if c not in train_set]
        return train, test, set()
    if split_name == "length":
        train = [c for c in commands if _num_actions(c) <= LENGTH_SPLIT_MAX_TRAIN_ACTIONS]
        test = [c for c in commands if _num_actions(c) > LENGTH_SPLIT_MAX_TRAIN_ACTIONS]
        return train, test, set()
    if split_name == "addprim_jump":
        with_jump = [c for c in commands if "jump" in c.split()]
        train = [c for c in commands if "jump" not in c.split()] + ["jump"] * ADDPRIM_JUMP_REPEATS
        test = [c for c in with_jump if c != "jump"]
        return train, test, {"jump"}
    raise ValueError(f"unknown SCAN split {split_name!r}; valid splits: {list(SCAN_SPLITS)}")


def _examples(commands: list[str]) -> list[Example]:
    return [Example(prompt=c, references=[interpret(c)]) for c in commands]


def make_scan_task(split_name: str = "simple", seed: int = 0, validation_fraction: float = 0.1) -> Task:
    """Build the SCAN task for one of the published train / test splits, with a validation split carved from train.

    ## Description

    SCAN (Lake & Baroni, 2018) maps navigation commands in a small artificial language to the action
    sequences that execute them, e.g. ``"jump opposite left and walk thrice"`` ->
    ``"I_TURN_LEFT I_TURN_LEFT I_JUMP I_WALK I_WALK I_WALK"``. All 20,910 commands are generated here
    from the paper's grammar and interpretation function (see :mod:`lmrl_gym.tasks.scan`).

    The task is word level: a token is one whitespace-separated word. The prompt of an example is a
    command (13 possible words: walk look run jump turn left right opposite around twice thrice and
    after; 1 to 9 words long) and its single reference is the action sequence (6 possible actions:
    I_WALK I_LOOK I_RUN I_JUMP I_TURN_LEFT I_TURN_RIGHT; 1 to 48 actions long). Every command has
    exactly one correct action sequence, so exact match against the reference is the natural
    success criterion.

    ## Splits

    The published release (https://github.com/brendenlake/SCAN) has train and test files only. Here
    ``test`` is the published test set and ``validation`` is a deterministic, ``seed``-dependent
    sample of ``round(validation_fraction * published_train_size)`` examples carved out of the
    published train set, so ``train + validation`` is exactly the published train set (as a
    multiset). Examples are listed in the fixed order of :func:`scan_commands`, not shuffled.

    | split_name     | published train | published test | what is held out                                   |
    |----------------|-----------------|----------------|----------------------------------------------------|
    | "simple"       | 16,728          | 4,182          | a random 20% of all commands                       |
    | "length"       | 16,990          | 3,920          | commands whose action sequences exceed 22 actions  |
    | "addprim_jump" | 14,670          | 7,706          | every composed command containing "jump"           |

    - ``"simple"``: the release draws its 80/20 split at random and that draw cannot be regenerated;
      this split has the published sizes but its own (fixed, seed-independent) random draw.
    - ``"length"``: train holds the commands with at most 22 actions, test those with 24 to 48 (no
      command has 23). Identical to the release as a set of commands.
    - ``"addprim_jump"``: train holds the 13,203 commands without "jump" plus the primitive command
      "jump" repeated 1,467 times, as in the release; test holds the other 7,706 commands containing
      "jump". The "jump" repetitions are never carved into validation (they always stay in train);
      validation is drawn from the jump-free commands only. Identical to the release as multisets.

    With ``validation_fraction=0.1`` the sizes (train / validation / test) are: simple
    15,055 / 1,673 / 4,182; length 15,291 / 1,699 / 3,920; addprim_jump 13,203 / 1,467 / 7,706.

    ## Arguments

    - ``split_name``: ``"simple"`` (default), ``"length"`` or ``"addprim_jump"``.
    - ``seed``: chooses which published-train examples go to validation; the train + validation
      union and the test set do not depend on it.
    - ``validation_fraction``: fraction of the published train set carved into validation, in
      ``[0, 1)``; ``0`` gives an empty validation split. At least one example always stays in train.

    :raises ValueError: for an unknown ``split_name`` or a ``validation_fraction`` outside ``[0, 1)``.

    ## Reference

    Brenden M. Lake and Marco Baroni. "Generalization without Systematicity: On the Compositional
    Skills of Sequence-to-Sequence Recurrent Networks." Proceedings of the 35th International
    Conference on Machine Learning (ICML), PMLR 80, 2018. https://arxiv.org/abs/1711.00350

    ## Version History

    - v0: initial version; splits "simple", "length" and "addprim_jump", generated from the grammar
      with the published train / test sizes.
    """
    if split_name not in SCAN_SPLITS:
        raise ValueError(f"unknown SCAN split {split_name!r}; valid splits: {list(SCAN_SPLITS)}")
    fraction = float(validation_fraction)
    if not (math.isfinite(fraction) and 0.0 <= fraction < 1.0):
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction!r}")

    train_cmds, test_cmds, keep_in_train = _published_split(split_name)
    expected_train, expected_test = PUBLISHED_SIZES[split_name]
    if (len(train_cmds), len(test_cmds)) != (expected_train, expected_test):  # pragma: no cover - guard
        raise RuntimeError(
            f"generated SCAN {split_name} split has {len(train_cmds)} / {len(test_cmds)} examples, "
            f"the release has {expected_train} / {expected_test}"
        )

    carvable = sorted({c for c in train_cmds if c not in keep_in_train}, key=lambda c: stable_hash(c, seed))
    n_val = min(round(fraction * len(train_cmds)), len(carvable))
    if n_val >= len(train_cmds):  # keep at least one training example
        n_val = len(train_cmds) - 1
    val_set = set(carvable[:n_val])
    train = [c for c in train_cmds if c not in val_set]
    validation = [c for c in train_cmds if c in val_set]

    description = (
        f"SCAN ({split_name} split): translate a navigation command such as 'jump around left twice' "
        "into its action sequence (I_WALK, I_LOOK, I_RUN, I_JUMP, I_TURN_LEFT, I_TURN_RIGHT)."
    )
    config = {
        "split_name": split_name,
        "seed": seed,
        "validation_fraction": validation_fraction,
        "published_train_size": expected_train,
        "published_test_size": expected_test,
        "version": 0,
    }
    return Task(
        name="scan",
        splits={
            "train": _examples(train),
            "validation": _examples(validation),
            "test": _examples(test_cmds),
        },
        level="word",
        description=description,
        config=config,
    )
