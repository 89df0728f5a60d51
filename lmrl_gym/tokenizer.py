"""Word- and character-level tokenizers built from a task's training text."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from lmrl_gym.atomic_file import atomic_path

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
LEVELS = ("word", "char")


class Tokenizer:
    """Maps text to token ids and back.

    ``level="word"`` splits on whitespace and joins with one space; ``level="char"`` uses every character
    (spaces included). Ids 0-3 are always ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>``; the remaining ids are
    the training tokens, most frequent first (ties broken alphabetically) so a vocabulary is reproducible.

    ``decode(encode(text)) == text`` for any text whose tokens are all in the vocabulary and, at word level,
    whose words are separated by single spaces.
    """

    def __init__(self, tokens: Sequence[str], level: str = "word") -> None:
        if level not in LEVELS:
            raise ValueError(f"unknown tokenizer level {level!r}; valid levels: {list(LEVELS)}")
        tokens = list(tokens)
        if tuple(tokens[:4]) != SPECIAL_TOKENS:
            raise ValueError(f"a vocabulary must start with the special tokens {list(SPECIAL_TOKENS)}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("a vocabulary must not repeat a token")
        self.level = level
        self.id_to_token: list[str] = tokens
        self.token_to_id: dict[str, int] = {t: i for i, t in enumerate(tokens)}
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = 0, 1, 2, 3

    @classmethod
    def from_texts(cls, texts: Iterable[str], level: str = "word") -> Tokenizer:
        """Build a vocabulary from ``texts`` (typically a task's training prompts and references)."""
        if level not in LEVELS:
            raise ValueError(f"unknown tokenizer level {level!r}; valid levels: {list(LEVELS)}")
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(cls._split(text, level))
        for special in SPECIAL_TOKENS:
            counts.pop(special, None)
        ordered = sorted(counts, key=lambda t: (-counts[t], t))
        return cls([*SPECIAL_TOKENS, *ordered], level=level)

    @staticmethod
    def _split(text: str, level: str) -> list[str]:
        return text.split() if level == "word" else list(text)

    @property
    def vocab_size(self) -> int:
        return len(self.id_to_token)

    @property
    def eos_ids(self) -> tuple[int, ...]:
        """Ids that end a text: eos only (a Hugging Face tokenizer may have several)."""
        return (self.eos_id,)

    # A word vocabulary sets no limit on a model's positions (a Hugging Face tokenizer may).
    model_max_length = None

    @property
    def invalid_action_ids(self) -> tuple[int, ...]:
        """Ids a policy can never usefully emit: pad, bos and unk."""
        return (self.pad_id, self.bos_id, self.unk_id)

    def tokenize(self, text: str) -> list[str]:
        return self._split(text, self.level)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no bos / eos added); unknown tokens map to ``unk_id``."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        get = self.token_to_id.get
        return [get(tok, self.unk_id) for tok in self._split(text, self.level)]

    def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
        """:meth:`encode` of each text."""
        return [self.encode(text) for text in texts]

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """Text of ``ids``; by default pad / bos / eos are dropped and decoding stops at the first eos."""
        pieces = []
        size = self.vocab_size
        for raw in ids:
            i = int(raw)
            if not 0 <= i < size:
                raise ValueError(f"token id {i} is outside the vocabulary [0, {size})")
            if skip_special:
                if i == self.eos_id:
                    break
                if i in (self.pad_id, self.bos_id):
                    continue
            pieces.append(self.id_to_token[i])
        return (" " if self.level == "word" else "").join(pieces)

    def to_dict(self) -> dict:
        return {"format": "lmrl_gym.Tokenizer/1", "level": self.level, "tokens": self.id_to_token}

    @classmethod
    def from_dict(cls, data: dict) -> Tokenizer:
        """The tokenizer :meth:`to_dict` wrote; also reads what :meth:`lmrl_gym.HFTokenizer.to_dict` writes
        (returning an ``HFTokenizer``), so checkpoints that embed either kind load through one call."""
        if isinstance(data, dict) and data.get("format") == "lmrl_gym.HFTokenizer/1":
            from lmrl_gym.hf_tokenizer import HFTokenizer

            return HFTokenizer.from_dict(data)  # type: ignore[return-value]
        if not isinstance(data, dict) or data.get("format") != "lmrl_gym.Tokenizer/1":
            raise ValueError("not an lmrl_gym tokenizer file (missing format 'lmrl_gym.Tokenizer/1')")
        return cls(data["tokens"], level=data["level"])

    def save(self, path: str | os.PathLike) -> None:
        """Write the vocabulary as JSON, atomically (a crash never leaves a half-written file)."""
        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"tokenizer file {path} is not valid JSON: {err}") from err
        return cls.from_dict(data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokenizer) and (self.level, self.id_to_token) == (
            other.level,
            other.id_to_token,
        )

    def __repr__(self) -> str:
        return f"Tokenizer(level={self.level!r}, vocab_size={self.vocab_size})"
