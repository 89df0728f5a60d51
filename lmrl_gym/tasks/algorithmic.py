"""Algorithmic sequence tasks: copy, reverse, sort and multi-digit addition.

Every task is generated offline and deterministically from a seed and carved into disjoint train /
validation / test splits (no prompt appears in two splits) with :func:`lmrl_gym.tasks.base.split_by_hash`.
"""

from __future__ import annotations

import itertools
import operator
import random
import string
from collections.abc import Callable

from lmrl_gym.tasks.base import Example, Task, split_by_hash

FRACTIONS = (0.8, 0.1, 0.1)
MAX_SYMBOLS = len(string.ascii_lowercase)


def check_int(name: str, value: object, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an ``int`` in ``[low, high]``, or a ValueError naming the argument."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        result = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r} ({type(value).__name__})") from None
    if (low is not None and result < low) or (high is not None and result > high):
        if high is None:
            allowed = f">= {low}"
        elif low is None:
            allowed = f"<= {high}"
        else:
            allowed = f"between {low} and {high}"
        raise ValueError(f"{name} must be {allowed}, got {result}")
    return result


def _check_sequence_args(
    num_symbols: object, min_length: object, max_length: object, num_examples: object, seed: object
) -> tuple[int, int, int, int, int]:
    num_symbols = check_int("num_symbols", num_symbols, 2, MAX_SYMBOLS)
    min_length = check_int("min_length", min_length, 1)
    max_length = check_int("max_length", max_length, 1)
    if max_length < min_length:
        raise ValueError(f"max_length must be >= min_length ({min_length}), got {max_length}")
    num_examples = check_int("num_examples", num_examples, 1)
    seed = check_int("seed", seed)
    return num_symbols, min_length, max_length, num_examples, seed


def _symbol_sequences(
    num_symbols: int, min_length: int, max_length: int, num_examples: int, seed: int
) -> list[tuple[int, ...]]:
    """Distinct symbol-index sequences, all of them when there are at most ``num_examples``.

    Otherwise ``num_examples`` distinct sequences are sampled: a length uniform in
    ``[min_length, max_length]`` (among lengths not yet exhausted), then a uniform sequence of it.
    """
    capacity = {length: num_symbols**length for length in range(min_length, max_length + 1)}
    if num_examples >= sum(capacity.values()):
        return [
            seq
            for length in range(min_length, max_length + 1)
            for seq in itertools.product(range(num_symbols), repeat=length)
        ]
    rng = random.Random(seed)
    seen: set[tuple[int, ...]] = set()
    used = dict.fromkeys(capacity, 0)
    open_lengths = list(capacity)
    out: list[tuple[int, ...]] = []
    while len(out) < num_examples:
        length = open_lengths[rng.randrange(len(open_lengths))]
        seq = tuple(rng.randrange(num_symbols) for _ in range(length))
        if seq in seen:
            continue
        seen.add(seq)
        out.append(seq)
        used[length] += 1
        if used[length] == capacity[length]:
            open_lengths.remove(length)
    return out


def _sequence_task(
    name: str,
    transform: Callable[[list[str]], list[str]],
    description: str,
    num_symbols: object,
    min_length: object,
    max_length: object,
    num_examples: object,
    seed: object,
) -> Task:
    num_symbols, min_length, max_length, num_examples, seed = _check_sequence_args(
        num_symbols, min_length, max_length, num_examples, seed
    )
    symbols = string.ascii_lowercase[:num_symbols]
    examples = []
    for seq in _symbol_sequences(num_symbols, min_length, max_length, num_examples, seed):
        words = [symbols[i] for i in seq]
        examples.append(Example(" ".join(words), [" ".join(transform(words))]))
    config = {
        "num_symbols": num_symbols,
        "min_length": min_length,
        "max_length": max_length,
        "num_examples": num_examples,
        "seed": seed,
    }
    return Task(
        name=name,
        splits=split_by_hash(examples, seed, FRACTIONS),
        level="word",
        description=description,
        config=config,
    )


def make_copy_task(
    num_symbols: int = 10, min_length: int = 2, max_length: int = 8, num_examples: int = 5000, seed: int = 0
) -> Task:
    """Copy a sequence of symbols.

    ## Description

    Word level: a token is one symbol word (``"a"``, ``"b"``, ...). The prompt is a random sequence of
    symbols separated by spaces; the single reference is the same sequence.

    Example: prompt ``"c a d"``, reference ``"c a d"``.

    ## Splits

    ``num_examples`` distinct sequences carved 80% / 10% / 10% into train / validation / test by a seeded
    hash of the prompt, so the splits are disjoint and the same for the same seed. When ``num_examples`` is
    at least the number of possible sequences, every sequence of every allowed length is used instead
    (e.g. 6 symbols of length 3: all 216). Very small tasks (under 10 examples) can have an empty
    validation or test split.

    ## Arguments

    * ``num_symbols``: alphabet size, 2 to 26; the symbols are the words ``"a"``, ``"b"``, ... .
    * ``min_length``, ``max_length``: sequence lengths, ``1 <= min_length <= max_length``. Each sampled
      sequence first draws its length uniformly from the lengths in ``[min_length, max_length]`` that
      still have unused sequences, then a uniform sequence of that length.
    * ``num_examples``: number of distinct sequences, >= 1.
    * ``seed``: an integer; the task (sequences and splits) is a pure function of the arguments.

    ## Version History

    * v0: initial version
    """
    return _sequence_task(
        "copy",
        list,
        "Copy a space-separated sequence of symbols.",
        num_symbols,
        min_length,
        max_length,
        num_examples,
        seed,
    )


def make_reverse_task(
    num_symbols: int = 10, min_length: int = 2, max_length: int = 8, num_examples: int = 5000, seed: int = 0
) -> Task:
    """Reverse a sequence of symbols.

    ## Description

    Word level: a token is one symbol word (``"a"``, ``"b"``, ...). The prompt is a random sequence of
    symbols separated by spaces; the single reference is the sequence in reverse order.

    Example: prompt ``"c a d"``, reference ``"d a c"``.

    ## Splits

    ``num_examples`` distinct sequences carved 80% / 10% / 10% into train / validation / test by a seeded
    hash of the prompt, so the splits are disjoint and the same for the same seed. When ``num_examples`` is
    at least the number of possible sequences, every sequence of every allowed length is used instead
    (e.g. 6 symbols of length 3: all 216). Very small tasks (under 10 examples) can have an empty
    validation or test split.

    ## Arguments

    * ``num_symbols``: alphabet size, 2 to 26; the symbols are the words ``"a"``, ``"b"``, ... .
    * ``min_length``, ``max_length``: sequence lengths, ``1 <= min_length <= max_length``. Each sampled
      sequence first draws its length uniformly from the lengths in ``[min_length, max_length]`` that
      still have unused sequences, then a uniform sequence of that length.
    * ``num_examples``: number of distinct sequences, >= 1.
    * ``seed``: an integer; the task (sequences and splits) is a pure function of the arguments.

    ## Version History

    * v0: initial version
    """
    return _sequence_task(
        "reverse",
        lambda words: words[::-1],
        "Reverse a space-separated sequence of symbols.",
        num_symbols,
        min_length,
        max_length,
        num_examples,
        seed,
    )


def make_sort_task(
    num_symbols: int = 10, min_length: int = 2, max_length: int = 8, num_examples: int = 5000, seed: int = 0
) -> Task:
    """Sort a sequence of symbols.

    ## Description

    Word level: a token is one symbol word (``"a"``, ``"b"``, ...). The prompt is a random sequence of
    symbols separated by spaces (repeats allowed); the single reference is the sequence sorted
    alphabetically (repeats kept).

    Example: prompt ``"c a d"``, reference ``"a c d"``.

    ## Splits

    ``num_examples`` distinct sequences carved 80% / 10% / 10% into train / validation / test by a seeded
    hash of the prompt, so the splits are disjoint and the same for the same seed. When ``num_examples`` is
    at least the number of possible sequences, every sequence of every allowed length is used instead
    (e.g. 6 symbols of length 3: all 216). Very small tasks (under 10 examples) can have an empty
    validation or test split.

    ## Arguments

    * ``num_symbols``: alphabet size, 2 to 26; the symbols are the words ``"a"``, ``"b"``, ... .
    * ``min_length``, ``max_length``: sequence lengths, ``1 <= min_length <= max_length``. Each sampled
      sequence first draws its length uniformly from the lengths in ``[min_length, max_length]`` that
      still have unused sequences, then a uniform sequence of that length.
    * ``num_examples``: number of distinct sequences, >= 1.
    * ``seed``: an integer; the task (sequences and splits) is a pure function of the arguments.

    ## Version History

    * v0: initial version
    """
    return _sequence_task(
        "sort",
        sorted,
        "Sort a space-separated sequence of symbols alphabetically.",
        num_symbols,
        min_length,
        max_length,
        num_examples,
        seed,
    )


def _digits(n: int) -> str:
    return " ".join(str(n))


def make_addition_task(max_digits: int = 3, num_examples: int = 5000, seed: int = 0) -> Task:
    """Add two non-negative integers written digit by digit.

    ## Description

    Word level: a token is one decimal digit ``"0"`` ... ``"9"`` or the word ``"+"``. The prompt is two
    operands, each in ``0 .. 10**max_digits - 1`` written without leading zeros with one word per digit,
    joined by ``"+"``; the single reference is their sum written the same way.

    Example: prompt ``"1 2 + 3 4"``, reference ``"4 6"``.

    Operand pairs are drawn uniformly (so most operands have ``max_digits`` digits); ``a + b`` and
    ``b + a`` are different prompts.

    ## Splits

    ``num_examples`` distinct operand pairs (all ``10**(2 * max_digits)`` pairs when that is not more)
    carved 80% / 10% / 10% into train / validation / test by a seeded hash of the prompt, so the splits are
    disjoint and the same for the same seed.

    ## Arguments

    * ``max_digits``: the most digits an operand has, 1 to 18.
    * ``num_examples``: number of distinct operand pairs (>= 1).
    * ``seed``: an integer; the task (pairs and splits) is a pure function of the arguments.

    ## Version History

    * v0: initial version
    """
    max_digits = check_int("max_digits", max_digits, 1, 18)
    num_examples = check_int("num_examples", num_examples, 1)
    seed = check_int("seed", seed)
    base = 10**max_digits
    total = base * base
    rng = random.Random(seed)
    if num_examples >= total:
        codes: list[int] = list(range(total))
    elif 2 * num_examples >= total:
        codes = rng.sample(range(total), num_examples)
    else:
        seen: set[int] = set()
        codes = []
        while len(codes) < num_examples:
            code = rng.randrange(total)
            if code not in seen:
                seen.add(code)
                codes.append(code)
    examples = []
    for code in codes:
        a, b = divmod(code, base)
        examples.append(Example(f"{_digits(a)} + {_digits(b)}", [_digits(a + b)]))
    return Task(
        name="addition",
        splits=split_by_hash(examples, seed, FRACTIONS),
        level="word",
        description="Add two integers written one digit per word.",
        config={"max_digits": max_digits, "num_examples": num_examples, "seed": seed},
    )
