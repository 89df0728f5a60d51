"""The task abstraction: examples (a prompt and one or more references) in fixed splits."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from lmrl_gym.tokenizer import Tokenizer

SPLITS = ("train", "validation", "test")


@dataclass
class Example:
    """One conditional generation example.

    :param prompt: the text the policy conditions on (may be empty).
    :param references: one or more acceptable outputs; BLEU clips against all of them. Empty only in
        prompt-only data (a data set without references, for rewards that need none).
    """

    prompt: str
    references: list[str]

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str):
            raise TypeError(f"Example.prompt must be a str, got {type(self.prompt).__name__}")
        if isinstance(self.references, str):
            self.references = [self.references]
        self.references = list(self.references)
        for ref in self.references:
            if not isinstance(ref, str):
                raise TypeError(f"every reference must be a str, got {type(ref).__name__}")


@dataclass
class Task:
    """A text-generation task: named splits of examples plus the tokenizer built from the training split.

    Subclasses (or factory functions) generate the examples offline and deterministically from a seed.
    ``level`` is ``"word"`` (tokens are whitespace-separated words) or ``"char"`` (tokens are characters).

    :param name: the task's registry name, e.g. ``"copy"``.
    :param splits: ``{"train": [...], "validation": [...], "test": [...]}``.
    :param level: tokenizer level, ``"word"`` or ``"char"``.
    :param description: a human-readable description (shown by ``lmrl_gym.list_tasks`` docs and ``render``).
    """

    name: str
    splits: dict[str, list[Example]]
    level: str = "word"
    description: str = ""
    config: dict = field(default_factory=dict)
    _tokenizer: Tokenizer | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        missing = [s for s in SPLITS if s not in self.splits]
        if missing:
            raise ValueError(f"task {self.name!r} lacks splits {missing}; a task needs {list(SPLITS)}")
        extra = [s for s in self.splits if s not in SPLITS]
        if extra:
            raise ValueError(f"task {self.name!r} has unknown splits {extra}; allowed: {list(SPLITS)}")
        if not self.splits["train"]:
            raise ValueError(f"task {self.name!r} has an empty train split")

    @property
    def has_references(self) -> bool:
        """False for prompt-only data: no example of any split has a reference."""
        return any(ex.references for split in SPLITS for ex in self.splits[split])

    def examples(self, split: str = "train") -> list[Example]:
        """The examples of ``split`` (``"train"``, ``"validation"`` or ``"test"``)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid splits: {list(SPLITS)}")
        return self.splits[split]

    @property
    def tokenizer(self) -> Tokenizer:
        """The tokenizer built from the training split's prompts and references (cached)."""
        if self._tokenizer is None:
            texts = [t for ex in self.splits["train"] for t in (ex.prompt, *ex.references)]
            self._tokenizer = Tokenizer.from_texts(texts, level=self.level)
        return self._tokenizer

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={len(self.splits[s])}" for s in SPLITS)
        return f"Task({self.name!r}, {sizes}, level={self.level!r})"


def stable_hash(text: str, seed: int = 0) -> int:
    """A 64-bit hash of ``text`` that, unlike ``hash``, is the same in every process."""
    digest = hashlib.blake2b(f"{seed}:{text}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def split_by_hash(
    items: Sequence[Example],
    seed: int,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> dict[str, list[Example]]:
    """Carve train / validation / test deterministically, keeping all examples with the same prompt together.

    Examples are ordered by a stable hash of their prompt (so the result does not depend on input order
    or Python's hash seed) and cut by ``fractions``. Prompts are kept together so splits are disjoint in
    their inputs, not only in their rows.
    """
    if abs(sum(fractions) - 1.0) > 1e-9 or any(f < 0 for f in fractions):
        raise ValueError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    prompts = sorted({ex.prompt for ex in items}, key=lambda p: stable_hash(p, seed))
    n = len(prompts)
    n_train = max(1, round(fractions[0] * n)) if n else 0
    n_val = round(fractions[1] * n)
    if n_train + n_val > n:
        n_val = n - n_train
    assignment = {}
    for i, p in enumerate(prompts):
        assignment[p] = "train" if i < n_train else ("validation" if i < n_train + n_val else "test")
    out: dict[str, list[Example]] = {s: [] for s in SPLITS}
    for ex in items:
        out[assignment[ex.prompt]].append(ex)
    return out


def dedupe(examples: Iterable[Example]) -> list[Example]:
    """Drop exact duplicate examples, keeping first occurrences in order."""
    seen: set[tuple[str, tuple[str, ...]]] = set()
    out = []
    for ex in examples:
        key = (ex.prompt, tuple(ex.references))
        if key not in seen:
            seen.add(key)
            out.append(ex)
    return out
