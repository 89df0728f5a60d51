"""Tasks from the user's own data: in-memory examples, or a JSON Lines / CSV file.

Whatever the source, the result is a :class:`~lmrl_gym.tasks.base.Task` with disjoint train / validation /
test splits (no prompt in two splits): either the splits the data gives, or carved deterministically by
:func:`~lmrl_gym.tasks.base.split_by_hash`.
"""

from __future__ import annotations

import csv
import io
import json
import numbers
import operator
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from lmrl_gym.tasks.base import SPLITS, Example, Task, dedupe, split_by_hash
from lmrl_gym.tokenizer import LEVELS

DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
JSONL_SUFFIXES = (".jsonl", ".json")
CSV_SUFFIXES = (".csv",)
ALLOWED_SUFFIXES = JSONL_SUFFIXES + CSV_SUFFIXES
_SPLITS_TEXT = ", ".join(repr(s) for s in SPLITS)


@dataclass
class _Row:
    """One parsed example with its split (``None`` when not given) and where it came from."""

    example: Example
    split: str | None
    where: str  # "line 7" for files, "examples[3]" for in-memory data


# ---------------------------------------------------------------------------------------------- checks


def _check_level(level: object) -> str:
    if level not in LEVELS:
        raise ValueError(f"level must be one of {list(LEVELS)}, got {level!r}")
    return level  # type: ignore[return-value]


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    try:
        return operator.index(seed)
    except TypeError:
        raise ValueError(f"seed must be an integer, got {seed!r}") from None


def _check_fractions(fractions: object) -> tuple[float, float, float]:
    problem = (
        "fractions must be three non-negative numbers (train, validation, test) summing to 1 "
        f"with a positive train fraction, got {fractions!r}"
    )
    if isinstance(fractions, (str, bytes)) or not isinstance(fractions, Iterable):
        raise ValueError(problem)
    values = list(fractions)
    if len(values) != 3 or any(isinstance(f, bool) or not isinstance(f, numbers.Real) for f in values):
        raise ValueError(problem)
    values = [float(f) for f in values]
    if any(not f >= 0 for f in values) or values[0] <= 0 or abs(sum(values) - 1.0) > 1e-9:
        raise ValueError(problem)
    return values[0], values[1], values[2]


def _check_split(value: object, where: str) -> str | None:
    if value is None:
        return None
    if value not in SPLITS:
        raise ValueError(f"{where}: unknown split {value!r}; allowed: {_SPLITS_TEXT}")
    return value  # type: ignore[return-value]


def _check_reference(ref: object, label: str, where: str) -> str:
    if not isinstance(ref, str):
        raise ValueError(f"{where}: {label} must be a string, got {type(ref).__name__} ({ref!r})")
    if not ref.strip():
        raise ValueError(f"{where}: {label} is empty; a reference needs at least one non-space character")
    return ref


def _check_references(refs: object, where: str) -> list[str]:
    if isinstance(refs, str):
        return [_check_reference(refs, "the reference", where)]
    if not isinstance(refs, (list, tuple)):
        raise ValueError(
            f"{where}: references must be a string or a list of strings, got {type(refs).__name__}"
        )
    if not refs:
        raise ValueError(f"{where}: references is empty; give at least one reference")
    return [_check_reference(r, f"references[{i}]", where) for i, r in enumerate(refs)]


def _check_prompt(prompt: object, where: str) -> str:
    if not isinstance(prompt, str):
        raise ValueError(f"{where}: 'prompt' must be a string, got {type(prompt).__name__} ({prompt!r})")
    return prompt


# --------------------------------------------------------------------------------------- one record


def _parse_mapping(obj: Mapping, where: str) -> _Row:
    """A ``{"prompt": ..., "references": [...]}`` or ``{"prompt": ..., "reference": "..."}`` record."""
    if "prompt" not in obj:
        raise ValueError(f"{where}: missing 'prompt' (keys present: {sorted(map(str, obj))})")
    prompt = _check_prompt(obj["prompt"], where)
    has_list, has_one = "references" in obj, "reference" in obj
    if has_list and has_one:
        raise ValueError(f"{where}: give either 'references' (a list) or 'reference' (a string), not both")
    if has_list:
        refs = obj["references"]
        if not isinstance(refs, (list, tuple)):
            raise ValueError(
                f"{where}: 'references' must be a list of strings, got {type(refs).__name__} "
                "(use 'reference' for a single string)"
            )
        references = _check_references(refs, where)
    elif has_one:
        references = [_check_reference(obj["reference"], "'reference'", where)]
    else:
        raise ValueError(f"{where}: missing 'references' (a list of strings) or 'reference' (a string)")
    return _Row(Example(prompt, references), _check_split(obj.get("split"), where), where)


def _parse_item(item: object, where: str) -> _Row:
    """One in-memory example: an Example, a ``(prompt, references)`` pair or a mapping."""
    if isinstance(item, Example):
        prompt = _check_prompt(item.prompt, where)
        return _Row(Example(prompt, _check_references(item.references, where)), None, where)
    if isinstance(item, Mapping):
        return _parse_mapping(item, where)
    if isinstance(item, (tuple, list)) and len(item) == 2:
        prompt = _check_prompt(item[0], where)
        return _Row(Example(prompt, _check_references(item[1], where)), None, where)
    raise ValueError(
        f"{where}: an example must be an Example, a (prompt, references) pair or a dict with 'prompt' "
        f"and 'references' / 'reference', got {type(item).__name__} ({item!r:.80})"
    )


# ------------------------------------------------------------------------------------------ assembly


def _assemble(
    rows: list[_Row], prefix: str, seed: int, fractions: tuple[float, float, float]
) -> dict[str, list[Example]]:
    """Splits from ``rows``: the given ones (every row has a split) or carved by hash (no row has one).

    ``prefix`` starts every error message (``"data.csv: "`` for a file, empty for in-memory examples).
    """
    with_split = next((r for r in rows if r.split is not None), None)
    if with_split is None:
        return split_by_hash(dedupe(r.example for r in rows), seed, fractions)
    without = next((r for r in rows if r.split is None), None)
    if without is not None:
        raise ValueError(
            f"{prefix}{without.where}: no split given, but {with_split.where} has split "
            f"{with_split.split!r}; give a split for every example or for none"
        )
    first_seen: dict[str, _Row] = {}
    for row in rows:
        other = first_seen.setdefault(row.example.prompt, row)
        if other.split != row.split:
            raise ValueError(
                f"{prefix}{row.where}: prompt {row.example.prompt!r} is in split {row.split!r} but "
                f"{other.where} puts it in {other.split!r}; splits must not share a prompt"
            )
    splits = {s: dedupe(r.example for r in rows if r.split == s) for s in SPLITS}
    if not splits["train"]:
        raise ValueError(
            f"{prefix}no example has split 'train'; the train split must not be empty "
            "(validation and test may be)"
        )
    return splits


def make_examples_task(
    examples: Iterable | Mapping,
    name: str = "custom",
    level: str = "word",
    seed: int = 0,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
) -> Task:
    """A task from examples held in memory.

    ## Description

    A token is a whitespace-separated word (``level="word"``) or a character (``level="char"``); the
    tokenizer is built from the training split. Each example is a prompt (any string, may be empty) and
    one or more non-blank reference strings, given as any of:

    * an :class:`~lmrl_gym.tasks.base.Example`;
    * a pair ``(prompt, references)`` where ``references`` is a string or a list of strings;
    * a dict ``{"prompt": ..., "references": [...]}`` or ``{"prompt": ..., "reference": "..."}``,
      optionally with ``"split"``.

    Example pair: ``("seventy-one", ["soixante et onze"])``.

    ## Splits

    * ``examples`` a dict ``{"train": [...], "validation": [...], "test": [...]}``: those splits
      (missing keys are empty splits; train must not be empty).
    * a list whose dicts all carry ``"split"``: those splits.
    * a list without splits: carved by ``fractions`` with a hash of the prompt seeded by ``seed``.

    Exact duplicate examples are dropped. Examples with the same prompt always share a split; given
    splits that put one prompt in two splits raise a ValueError.

    ## Arguments

    * ``examples``: the examples, as above.
    * ``name``: the task's name (a non-empty string), default ``"custom"``.
    * ``level``: ``"word"`` or ``"char"``.
    * ``seed``: an integer choosing the carved split.
    * ``fractions``: train / validation / test fractions for a carved split, non-negative, summing to 1.

    ## Version History

    * v0: initial version
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    level = _check_level(level)
    seed = _check_seed(seed)
    fractions = _check_fractions(fractions)
    rows: list[_Row] = []
    if isinstance(examples, Mapping):
        unknown = [k for k in examples if k not in SPLITS]
        if unknown:
            raise ValueError(
                f"examples is a dict, so its keys must be split names ({_SPLITS_TEXT}), got unknown keys "
                f"{unknown!r}; pass a list for examples without given splits"
            )
        for split in SPLITS:
            items = examples.get(split, [])
            if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Iterable):
                raise ValueError(
                    f"examples[{split!r}] must be a list of examples, got {type(items).__name__}"
                )
            for i, item in enumerate(items):
                row = _parse_item(item, f"examples[{split!r}][{i}]")
                if row.split not in (None, split):
                    raise ValueError(f"{row.where}: has split {row.split!r} but is listed under {split!r}")
                row.split = split
                rows.append(row)
    elif isinstance(examples, (str, bytes)) or not isinstance(examples, Iterable):
        raise ValueError(
            "examples must be a list of examples or a dict of such lists keyed by split, "
            f"got {type(examples).__name__}"
        )
    else:
        rows = [_parse_item(item, f"examples[{i}]") for i, item in enumerate(examples)]
    if not rows:
        raise ValueError("examples holds no examples; a task needs at least one training example")
    splits = _assemble(rows, "", seed, fractions)
    return Task(
        name=name,
        splits=splits,
        level=level,
        description=f"User-supplied examples ({name}).",
        config={"level": level, "seed": seed, "fractions": fractions},
    )


# ---------------------------------------------------------------------------------------------- files


def _check_path(path: object) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path must be a str or os.PathLike, got {type(path).__name__} ({path!r})")
    p = Path(path)
    if p.suffix.lower() not in ALLOWED_SUFFIXES:
        raise ValueError(
            f"path {str(p)!r} has suffix {p.suffix!r}; allowed suffixes: {', '.join(ALLOWED_SUFFIXES)} "
            "(.jsonl / .json: JSON Lines, .csv: CSV with a header)"
        )
    return p


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ValueError(f"{path}: line {line}: not valid UTF-8 text ({err.reason})") from None


def _read_jsonl(path: Path, text: str) -> list[_Row]:
    rows = []
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}: line {number}"
        hint = ""
        if not rows and line.lstrip().startswith("["):
            hint = " (the file must be JSON Lines: one JSON object per line, not a JSON array)"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: invalid JSON: {err.msg} at column {err.colno}{hint}") from None
        if not isinstance(obj, dict):
            raise ValueError(
                f"{where}: expected a JSON object with 'prompt' and 'references', "
                f"got {type(obj).__name__}{hint}"
            )
        row = _parse_mapping(obj, where)
        row.where = f"line {number}"
        rows.append(row)
    return rows


def _read_csv(path: Path, text: str) -> list[_Row]:
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[_Row] = []
    header: list[str] | None = None
    header_line = 0
    prompt_col = split_col = -1
    ref_cols: list[int] = []
    while True:
        number = reader.line_num + 1  # first line of the next record
        where = f"{path}: line {number}"
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            raise ValueError(f"{where}: malformed CSV: {err}") from None
        if not any(cell.strip() for cell in record):
            continue  # a blank line, or a row of empty cells
        if header is None:
            header = [cell.strip().lower() for cell in record]
            header_line = number
            prompt_cols = [i for i, h in enumerate(header) if h == "prompt"]
            ref_cols = [i for i, h in enumerate(header) if h.startswith("reference")]
            split_cols = [i for i, h in enumerate(header) if h == "split"]
            if not prompt_cols:
                raise ValueError(f"{where}: the header has no 'prompt' column (columns: {record})")
            if len(prompt_cols) > 1 or len(split_cols) > 1:
                raise ValueError(f"{where}: the header repeats the 'prompt' or 'split' column: {record}")
            if not ref_cols:
                raise ValueError(
                    f"{where}: the header has no reference column (named 'reference' or starting with "
                    f"'reference', e.g. reference_2); columns: {record}"
                )
            prompt_col = prompt_cols[0]
            split_col = split_cols[0] if split_cols else -1
            continue
        if len(record) != len(header):
            end = reader.line_num
            spans = f" (this record runs to line {end}: is a quote unclosed?)" if end > number else ""
            raise ValueError(
                f"{where}: wrong number of fields: {len(record)}, but the header (line {header_line}) "
                f"has {len(header)}{spans}"
            )
        references = [record[i] for i in ref_cols if record[i].strip()]
        if not references:
            names = ", ".join(header[i] for i in ref_cols)
            raise ValueError(f"{where}: no reference: every reference column ({names}) is empty")
        split = (record[split_col].strip() or None) if split_col >= 0 else None
        rows.append(
            _Row(Example(record[prompt_col], references), _check_split(split, where), f"line {number}")
        )
    if header is None:
        raise ValueError(f"{path}: the file is empty (a CSV file needs a header and at least one row)")
    return rows


def _read_rows(path: object) -> tuple[Path, list[_Row]]:
    p = _check_path(path)
    text = _read_text(p)
    rows = _read_csv(p, text) if p.suffix.lower() in CSV_SUFFIXES else _read_jsonl(p, text)
    if not rows:
        raise ValueError(f"{p}: the file holds no examples")
    return p, rows


def load_examples_file(path: str | os.PathLike) -> tuple[list[Example], list[str | None]]:
    """Read a JSON Lines (``.jsonl`` / ``.json``) or CSV (``.csv``) file of examples.

    Returns the examples in file order and, for each, its ``"split"`` value (``None`` where the row gives
    none). See :func:`make_file_task` for the formats. Raises ValueError naming the file and the 1-based
    line of the first malformed row, or for an empty file or an unknown suffix.
    """
    _, rows = _read_rows(path)
    return [r.example for r in rows], [r.split for r in rows]


def make_file_task(
    path: str | os.PathLike,
    level: str = "word",
    seed: int = 0,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
) -> Task:
    """A task from the user's JSON Lines or CSV file.

    ## Description

    A token is a whitespace-separated word (``level="word"``) or a character (``level="char"``); the
    tokenizer is built from the training split. Each row is a prompt (may be empty) and one or more
    non-blank references. The format is chosen by the suffix:

    * ``.jsonl`` or ``.json``: JSON Lines, one object per line, blank lines skipped::

          {"prompt": "seventy-one", "references": ["soixante et onze"], "split": "train"}
          {"prompt": "two", "reference": "deux"}

      ``"prompt"`` is a string; ``"references"`` a non-empty list of strings or ``"reference"`` one
      string; ``"split"`` (optional) is ``"train"``, ``"validation"`` or ``"test"``. Other keys are
      ignored.
    * ``.csv``: a header row, then one example per row::

          prompt,reference,reference_2,split
          seventy-one,soixante et onze,,train

      a ``prompt`` column, one or more columns named ``reference`` or starting with ``reference``
      (empty cells ignored, at least one must be filled), an optional ``split`` column; other columns are
      ignored, column names are matched case-insensitively and blank lines skipped.

    A malformed file raises a ValueError naming the file, the 1-based line number and the problem.

    ## Splits

    If every row gives a split those are the splits (validation or test may be empty, train may not);
    if no row does, the examples are carved by ``fractions`` with a hash of the prompt seeded by ``seed``;
    a mix is an error naming the first line without a split. Exact duplicate rows are dropped; rows with
    the same prompt always share a split (given splits that disagree are an error).

    ## Arguments

    * ``path``: the file, ``str`` or ``os.PathLike``, UTF-8 (a byte-order mark is allowed).
    * ``level``: ``"word"`` or ``"char"``.
    * ``seed``: an integer choosing the carved split.
    * ``fractions``: train / validation / test fractions for a carved split, non-negative, summing to 1.

    ## Version History

    * v0: initial version
    """
    level = _check_level(level)
    seed = _check_seed(seed)
    fractions = _check_fractions(fractions)
    p, rows = _read_rows(path)
    splits = _assemble(rows, f"{p}: ", seed, fractions)
    return Task(
        name="file",
        splits=splits,
        level=level,
        description=f"Examples from the file {p}.",
        config={"path": str(path), "level": level, "seed": seed, "fractions": fractions},
    )
