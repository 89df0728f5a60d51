"""Tasks from Hugging Face ``datasets``: a ``Dataset`` / ``DatasetDict``, a hub name, or a folder on disk.

``datasets`` is imported only when such a task is built. What ``gym.make(..., task=...)`` accepts:

- a ``datasets.Dataset`` or ``datasets.DatasetDict`` object;
- ``"hf:NAME"`` or ``"hf:NAME:CONFIG"``: ``datasets.load_dataset(NAME, CONFIG)`` (a hub name, or a local
  folder of data files), except that a folder written by ``save_to_disk`` is read with ``load_from_disk``;
- the path of a folder written by ``save_to_disk`` (no prefix needed).

The columns are named by ``task_kwargs={"prompt_column": ..., "reference_column": ...}``.
"""

from __future__ import annotations

import os
import sys
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lmrl_gym.tasks.base import SPLITS, Example, Task, dedupe, split_by_hash
from lmrl_gym.tasks.user_file import DEFAULT_FRACTIONS, _check_fractions, _check_level, _check_seed

HF_PREFIX = "hf:"
# Split names as data sets on the hub spell them -> ours. Other splits (IMDB's "unsupervised") are ignored.
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
}
# Files save_to_disk writes: a DatasetDict's index, a Dataset's state.
_DISK_MARKERS = ("dataset_dict.json", "state.json")
AUTO = "auto"

# Tasks loaded by name or path, by (name, config, arguments): a SyncVectorEnv of many envs, or evaluation
# rebuilding an env on another split, must not load and convert the data set again.
_LOADED: dict[tuple, Task] = {}
# Tasks of data set objects, by object (weakly: a task holds its own copy of the examples, not the data).
# Data sets are immutable (their methods return new objects), so one object always gives one task.
_BY_OBJECT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def is_dataset_object(obj: Any) -> bool:
    """Whether ``obj`` is a ``datasets`` data set (without importing ``datasets`` when it is not loaded)."""
    if "datasets" not in sys.modules:
        return False
    import datasets

    return isinstance(
        obj, (datasets.Dataset, datasets.DatasetDict, datasets.IterableDataset, datasets.IterableDatasetDict)
    )


def is_saved_dataset_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``."""
    p = Path(path)
    return p.is_dir() and any((p / marker).is_file() for marker in _DISK_MARKERS)


def _require_datasets():
    try:
        import datasets
    except ImportError as err:  # pragma: no cover - depends on the installation
        raise ImportError(
            "data sets from Hugging Face need the 'datasets' package: pip install 'lmrl-gym[hf]'"
        ) from err
    return datasets


def load_hf_task(spec: str | os.PathLike, **task_kwargs: Any) -> Task:
    """The task of ``"hf:NAME"``, ``"hf:NAME:CONFIG"`` or a ``save_to_disk`` folder (see the module doc).

    Cached by its arguments. A folder is read when first asked for; change it, and restart, to re-read.
    """
    _check_arguments(task_kwargs)
    text = str(spec)
    rest = text[len(HF_PREFIX) :] if text.startswith(HF_PREFIX) else text
    if not rest:
        raise ValueError(f"task {text!r} names no data set; write 'hf:NAME' or 'hf:NAME:CONFIG'")
    name, config = rest, None
    if not Path(rest).exists() and ":" in rest:
        name, _, config = rest.partition(":")
    try:
        key = (name, config, tuple(sorted((k, _hashable(v)) for k, v in task_kwargs.items())))
    except TypeError:
        key = None
    if key is not None and key in _LOADED:
        return _LOADED[key]
    datasets = _require_datasets()
    if is_saved_dataset_folder(name):
        if config is not None:
            raise ValueError(
                f"{name!r} is a folder written by save_to_disk; it has no config (got {config!r})"
            )
        data = datasets.load_from_disk(name)
    else:
        try:
            data = datasets.load_dataset(name, config)
        except Exception as err:  # datasets raises many types (FileNotFoundError, DatasetNotFoundError, ...)
            raise ValueError(
                f"cannot load data set {name!r}" + (f" (config {config!r})" if config else "") + f" with "
                f"datasets.load_dataset: {type(err).__name__}: {err}"
            ) from err
    task_kwargs.setdefault("name", HF_PREFIX + rest)
    task = make_dataset_task(data, **task_kwargs)
    if key is not None:
        _LOADED[key] = task
    return task


def _check_arguments(task_kwargs: Mapping[str, Any]) -> None:
    import inspect

    valid = [p for p in inspect.signature(make_dataset_task).parameters if p != "data"]
    unknown = sorted(k for k in task_kwargs if k not in valid)
    if unknown:
        raise ValueError(f"unknown task_kwargs {unknown} for a data set; valid: {valid}")


def dataset_task(data: Any, **task_kwargs: Any) -> Task:
    """:func:`make_dataset_task`, cached per data set object and arguments."""
    _check_arguments(task_kwargs)
    try:
        key = tuple(sorted((k, _hashable(v)) for k, v in task_kwargs.items()))
        per_object = _BY_OBJECT.setdefault(data, {})
    except TypeError:  # unhashable arguments, or an object that takes no weak reference
        return make_dataset_task(data, **task_kwargs)
    if key not in per_object:
        per_object[key] = make_dataset_task(data, **task_kwargs)
    return per_object[key]


def _hashable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    hash(value)
    return value


def make_dataset_task(
    data: Any,
    prompt_column: str = "prompt",
    reference_column: str | None = AUTO,
    name: str | None = None,
    level: str = "word",
    seed: int = 0,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
) -> Task:
    """A task from a ``datasets.Dataset`` or ``datasets.DatasetDict``.

    ## Description

    Each row is an example: its prompt is the ``prompt_column`` string, its references the
    ``reference_column`` value (a string, or a list of strings). Without a reference column the data is
    *prompt-only* (RL4LMs' IMDB continuation task: reviews as prompts, a sentiment classifier as reward):
    allowed with a reward that needs no references, and then ``max_new_tokens`` must be given.

    ## Splits

    A ``DatasetDict``'s splits are mapped to ours by name (``train``; ``validation`` / ``valid`` / ``val``
    / ``dev``; ``test``), other splits are ignored. A split that is absent is carved out of train by a hash
    of the prompt seeded by ``seed``, so that the three splits have the shares of ``fractions`` (80/10/10),
    as for files. A single ``Dataset`` (or a ``DatasetDict`` with one split of another name) is carved into
    all three. Exact duplicate examples are dropped within a split.

    ## Arguments

    * ``data``: the data set.
    * ``prompt_column``: the column of prompts (default ``"prompt"``).
    * ``reference_column``: the column of references; ``"auto"`` (default): ``"references"`` or
      ``"reference"`` when the data has one, else none (prompt-only); ``None``: prompt-only.
    * ``name``: the task's name (default: the data set's name).
    * ``level``: the word tokenizer's level when no Hugging Face tokenizer is given (``"word"`` | ``"char"``).
    * ``seed``, ``fractions``: the carving of absent splits.

    :raises ValueError: a missing column (the message lists the columns there are), a row without a
        prompt or references, no train split, a streaming data set.

    ## Version History

    * v0: initial version (issue 11)
    """
    datasets = _require_datasets()
    level = _check_level(level)
    seed = _check_seed(seed)
    fractions = _check_fractions(fractions)
    if isinstance(data, (datasets.IterableDataset, datasets.IterableDatasetDict)):
        raise ValueError(
            "streaming (iterable) data sets are not supported; load the data set with streaming=False"
        )
    if isinstance(data, datasets.Dataset):
        parts = {None: data}
    elif isinstance(data, datasets.DatasetDict):
        if not data:
            raise ValueError("the DatasetDict has no splits")
        parts = dict(data)
    else:
        raise ValueError(f"expected a datasets.Dataset or DatasetDict, got {type(data).__name__}")
    if name is None:
        first = next(iter(parts.values()))
        name = getattr(first.info, "dataset_name", None) or "dataset"
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be a non-empty string, got {name!r}")

    given = _map_splits(parts)
    columns = next(iter(given.values())).column_names
    if not isinstance(prompt_column, str) or prompt_column not in columns:
        raise ValueError(
            f"data set {name!r} has no prompt column {prompt_column!r}; its columns: {columns}. "
            "Name the column with task_kwargs={'prompt_column': ...}"
        )
    if reference_column == AUTO:
        reference_column = next((c for c in ("references", "reference") if c in columns), None)
    elif reference_column is not None and (
        not isinstance(reference_column, str) or reference_column not in columns
    ):
        raise ValueError(
            f"data set {name!r} has no reference column {reference_column!r}; its columns: {columns}. "
            "Name the column with task_kwargs={'reference_column': ...}, or pass None for prompt-only data"
        )
    splits = {
        split: _examples(part, split, prompt_column, reference_column, name) for split, part in given.items()
    }
    missing = [s for s in SPLITS if s not in splits]
    if missing:
        # Carve the absent splits out of train so that every split gets its share of `fractions`.
        shares = [fractions[SPLITS.index(s)] for s in SPLITS]
        kept = [shares[i] if (s == "train" or s in missing) else 0.0 for i, s in enumerate(SPLITS)]
        total = sum(kept)
        carved = split_by_hash(splits["train"], seed, tuple(k / total for k in kept))
        splits.update({s: carved[s] for s in ("train", *missing)})
    if not splits["train"]:
        raise ValueError(f"data set {name!r} has no training examples (train split empty after carving)")
    description = f"Examples of the data set {name}" + (" (prompt-only)" if reference_column is None else "")
    return Task(
        name=name,
        splits={s: splits[s] for s in SPLITS},
        level=level,
        description=description + ".",
        config={
            "prompt_column": prompt_column,
            "reference_column": reference_column,
            "level": level,
            "seed": seed,
            "fractions": fractions,
        },
    )


def _map_splits(parts: Mapping[Any, Any]) -> dict[str, Any]:
    """Our split name -> the data set's split, by :data:`SPLIT_ALIASES`; a lone split is the whole data."""
    if len(parts) == 1 and SPLIT_ALIASES.get(next(iter(parts))) is None:
        return {"train": next(iter(parts.values()))}  # one unnamed / oddly named split: carve all three
    mapped: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for split_name, part in parts.items():
        ours = SPLIT_ALIASES.get(str(split_name).lower())
        if ours is None:
            continue
        if ours in mapped:
            raise ValueError(
                f"the data set's splits {origin[ours]!r} and {split_name!r} both map to {ours!r}; keep one "
                "(e.g. DatasetDict({...}) without the other)"
            )
        mapped[ours], origin[ours] = part, split_name
    if "train" not in mapped:
        raise ValueError(
            f"the data set has no train split (its splits: {list(parts)}); name one 'train', or pass a "
            "single Dataset to have train / validation / test carved from it"
        )
    return mapped


def _examples(
    part: Any, split: str, prompt_column: str, reference_column: str | None, name: str
) -> list[Example]:
    """The examples of one split (columns read whole: one Arrow-to-Python conversion per column)."""
    columns = part.column_names
    for column in (prompt_column, reference_column):
        if column is not None and column not in columns:
            raise ValueError(
                f"split {split!r} of data set {name!r} has no column {column!r}; its columns: {columns}"
            )
    prompts = part[prompt_column]
    references = part[reference_column] if reference_column is not None else [[]] * len(prompts)
    examples = []
    for i, (prompt, refs) in enumerate(zip(prompts, references, strict=True)):
        where = f"data set {name!r}, split {split!r}, row {i}"
        if not isinstance(prompt, str):
            raise ValueError(
                f"{where}: the prompt ({prompt_column!r}) must be a string, got {type(prompt).__name__}"
            )
        if reference_column is not None:
            if isinstance(refs, str):
                refs = [refs]
            if not isinstance(refs, (list, tuple)) or not refs or not all(isinstance(r, str) for r in refs):
                raise ValueError(
                    f"{where}: the references ({reference_column!r}) must be a string or a non-empty list of "
                    f"strings, got {refs!r:.80}"
                )
        examples.append(Example(prompt, list(refs)))
    return dedupe(examples)
