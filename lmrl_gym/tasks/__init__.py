"""Built-in tasks and the user's own data, by name.

``make_task(name, **kwargs)`` builds a :class:`Task`; ``list_tasks()`` names the built-ins. Each builder's
docstring documents its task like a Gymnasium environment (``help(lmrl_gym.tasks.make_scan_task)``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lmrl_gym.tasks.algorithmic import (
    make_addition_task,
    make_copy_task,
    make_reverse_task,
    make_sort_task,
)
from lmrl_gym.tasks.base import SPLITS, Example, Task
from lmrl_gym.tasks.hf_dataset import (
    HF_PREFIX,
    dataset_task,
    is_dataset_object,
    is_saved_dataset_folder,
    load_hf_task,
    make_dataset_task,
)
from lmrl_gym.tasks.numbers import make_numbers_task
from lmrl_gym.tasks.oracle import OracleLM, OracleTask, make_oracle_task
from lmrl_gym.tasks.scan import make_scan_task
from lmrl_gym.tasks.user_file import make_examples_task, make_file_task

TASKS: dict[str, Callable[..., Task]] = {
    "copy": make_copy_task,
    "reverse": make_reverse_task,
    "sort": make_sort_task,
    "addition": make_addition_task,
    "scan": make_scan_task,
    "numbers": make_numbers_task,
    "oracle": make_oracle_task,
    "file": make_file_task,
}

DATA_FILE_SUFFIXES = (".jsonl", ".json", ".csv")

# Built tasks are immutable and some take a second to generate; environments made many times over
# (a SyncVectorEnv of 256 copies) share one instance per (name, arguments).
_TASK_CACHE: dict[tuple, Task] = {}


def list_tasks() -> list[str]:
    """Names accepted by :func:`make_task` (``"file"`` takes ``path=``)."""
    return list(TASKS)


def make_task(name: str, **kwargs: Any) -> Task:
    """Build the task ``name`` with its keyword arguments (cached: the same arguments give the same object).

    :raises ValueError: an unknown name (the message lists the valid ones) or an unknown keyword.
    """
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid tasks: {list_tasks()}")
    builder = TASKS[name]
    try:
        key = (name, tuple(sorted((k, _freeze(v)) for k, v in kwargs.items())))
    except TypeError:
        key = None
    if key is not None and key in _TASK_CACHE:
        return _TASK_CACHE[key]
    try:
        task = builder(**kwargs)
    except TypeError as err:
        if "unexpected keyword argument" in str(err):
            import inspect

            valid = list(inspect.signature(builder).parameters)
            raise ValueError(
                f"task {name!r} got an unknown argument ({err}); valid arguments: {valid}"
            ) from err
        raise
    if key is not None:
        _TASK_CACHE[key] = task
    return task


def _freeze(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, os.PathLike):
        return str(value)
    hash(value)
    return value


def resolve_task(spec: Any, task_kwargs: Mapping[str, Any] | None = None) -> Task:
    """What ``gym.make(..., task=spec)`` accepts: a built-in name, a path to a JSON Lines / CSV file, a
    :class:`Task`, a list of examples (``Example``, ``(prompt, references)`` or dicts), a
    ``datasets.Dataset`` / ``DatasetDict``, ``"hf:NAME"`` / ``"hf:NAME:CONFIG"`` (``datasets.load_dataset``),
    or a folder written by ``save_to_disk`` (see :mod:`lmrl_gym.tasks.hf_dataset`)."""
    task_kwargs = dict(task_kwargs or {})
    if isinstance(spec, Task):
        if task_kwargs:
            raise ValueError("task_kwargs cannot be combined with a Task instance (it is already built)")
        return spec
    if isinstance(spec, (str, os.PathLike)):
        text = str(spec)
        if text in TASKS:
            return make_task(text, **task_kwargs)
        if text.startswith(HF_PREFIX) or is_saved_dataset_folder(text):
            return load_hf_task(text, **task_kwargs)
        if Path(text).suffix.lower() in DATA_FILE_SUFFIXES or Path(text).is_file():
            return make_task("file", path=text, **task_kwargs)
        hint = (
            " (a folder, but not one written by save_to_disk: for a folder of data files write 'hf:PATH')"
            if Path(text).is_dir()
            else ""
        )
        raise ValueError(
            f"unknown task {text!r}{hint}; valid tasks: {list_tasks()}, a path to a "
            f"{'/'.join(DATA_FILE_SUFFIXES)} file of examples, 'hf:NAME[:CONFIG]' (a Hugging Face data set) "
            "or a folder written by save_to_disk"
        )
    if is_dataset_object(spec):
        return dataset_task(spec, **task_kwargs)
    if isinstance(spec, (Sequence, Mapping)):
        return make_examples_task(spec, **task_kwargs)
    raise ValueError(
        f"cannot make a task from {type(spec).__name__}; pass one of {list_tasks()}, a file path, a Task, "
        "a list of examples, a datasets.Dataset / DatasetDict or 'hf:NAME'"
    )


__all__ = [
    "SPLITS",
    "TASKS",
    "Example",
    "OracleLM",
    "OracleTask",
    "Task",
    "list_tasks",
    "make_addition_task",
    "make_copy_task",
    "make_dataset_task",
    "make_examples_task",
    "make_file_task",
    "make_numbers_task",
    "make_oracle_task",
    "make_reverse_task",
    "make_scan_task",
    "make_sort_task",
    "make_task",
    "resolve_task",
]
