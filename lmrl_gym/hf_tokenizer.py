"""A Hugging Face ``transformers`` tokenizer behind lmrl_gym's tokenizer protocol.

``transformers`` is imported only when an :class:`HFTokenizer` is built (``import lmrl_gym`` stays free of
it). The environments build one when they get ``tokenizer=`` (a ``PreTrainedTokenizerBase``, a local folder
or a hub name); a policy reads it back as ``env.unwrapped.tokenizer``.

The protocol is the word tokenizer's (:class:`lmrl_gym.Tokenizer`): ``encode``, ``decode``, ``pad_id``,
``eos_id``, ``bos_id``, ``unk_id``, ``vocab_size``, ``invalid_action_ids``. Three choices make a subword
vocabulary fit it:

- ``vocab_size`` is the size of the action space: ``len(tokenizer)``, or ``num_actions`` when the model has
  more logits than the tokenizer has tokens (T5: 32,128 logits for 32,100 tokens). Ids the tokenizer cannot
  decode are invalid actions.
- ``pad_id`` is ``vocab_size``: an id of the environment's own, one past the action space. Observations are
  right-padded with it, and it never occurs inside a prompt or a prefix, so ``ids != pad_id`` finds their
  lengths exactly. The tokenizer's own pad token (if any) is not used for this: eos-as-pad (GPT-2 has no
  pad) would be ambiguous, because eos can occur inside a prompt (a chat template, a literal
  ``<|endoftext|>``) and is the last token of a prefix that ended. The pad id is outside the model's
  embedding table on purpose: a policy must replace it (and mask it) before the model sees it, and one
  that forgets fails loudly instead of attending to a real token.
- ``eos_ids``: every id that ends a text: the tokenizer's eos, the ``eos_token_id`` list of a
  ``generation_config.json`` next to the tokenizer (chat models list their end-of-turn token there), and
  any ``eos_token_ids`` given. They are valid actions and each ends the episode; every other special token
  is invalid.
"""

from __future__ import annotations

import base64
import hashlib
import json
import numbers
import os
import tempfile
from collections.abc import Iterable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

HF_FORMAT = "lmrl_gym.HFTokenizer/1"
SETTINGS_FILE = "lmrl_tokenizer.json"
# transformers' placeholder for "no limit" is 1e30; anything above this is treated as no limit.
_NO_LIMIT = 10**9


def _require_transformers():
    try:
        import transformers
    except ImportError as err:  # pragma: no cover - depends on the installation
        raise ImportError(
            "a Hugging Face tokenizer needs the 'transformers' package: pip install 'lmrl-gym[hf]'"
        ) from err
    return transformers


def is_hf_tokenizer_object(obj: Any) -> bool:
    """Whether ``obj`` is a ``transformers.PreTrainedTokenizerBase`` (without importing transformers)."""
    if not any(c.__module__.startswith("transformers") for c in type(obj).__mro__):
        return False
    return isinstance(obj, _require_transformers().PreTrainedTokenizerBase)


def _generation_config_eos_ids(name_or_path: str) -> list[int]:
    """The ``eos_token_id`` (int or list) of the ``generation_config.json`` in a local folder, if any.

    Only local folders are read: a tokenizer object loaded from a hub name, or a hub name string, would need
    a download the user did not ask for (pass ``eos_token_ids=`` instead).
    """
    path = Path(name_or_path) / "generation_config.json"
    if not name_or_path or not path.is_file():
        return []
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get("eos_token_id")
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a readable generation config: {err}") from err
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{path}: eos_token_id must be an int or a list of ints, got {value!r}")
    return values


class HFTokenizer:
    """A ``transformers`` tokenizer as an lmrl_gym tokenizer (see the module docstring for the choices).

    :param tokenizer: a ``transformers.PreTrainedTokenizerBase``, or a string / path loaded with
        ``AutoTokenizer.from_pretrained`` (a local folder or a hub name).
    :param num_actions: the action-space size, at least ``len(tokenizer)`` (default: ``len(tokenizer)``);
        pass the model's output size when it has more logits than the tokenizer has tokens.
    :param eos_token_ids: more ids (ints or token strings) that end a text, e.g. a chat model's end-of-turn
        token when no ``generation_config.json`` lists it.
    :raises ValueError: no eos token, ``num_actions`` smaller than the tokenizer, an unknown eos token.
    """

    level = "subword"

    def __init__(
        self,
        tokenizer: Any,
        num_actions: int | None = None,
        eos_token_ids: Iterable[int | str] | None = None,
    ) -> None:
        transformers = _require_transformers()
        if isinstance(tokenizer, (str, os.PathLike)):
            try:
                tokenizer = transformers.AutoTokenizer.from_pretrained(str(tokenizer))
            except (OSError, ValueError) as err:
                raise ValueError(
                    f"cannot load a tokenizer from {str(tokenizer)!r} (a local folder written by "
                    f"save_pretrained, or a hub name): {err}"
                ) from err
        elif not isinstance(tokenizer, transformers.PreTrainedTokenizerBase):
            raise TypeError(
                "tokenizer must be a transformers.PreTrainedTokenizerBase, a local folder or a hub name, "
                f"got {type(tokenizer).__name__}"
            )
        self.hf_tokenizer = tokenizer
        self.num_tokens = len(tokenizer)
        if num_actions is None:
            num_actions = self.num_tokens
        if isinstance(num_actions, bool) or not isinstance(num_actions, numbers.Integral):
            raise ValueError(f"num_actions must be an integer or None, got {num_actions!r}")
        if num_actions < self.num_tokens:
            raise ValueError(
                f"num_actions={num_actions} is smaller than the tokenizer ({self.num_tokens} tokens): a model "
                "with fewer outputs than the tokenizer has ids cannot generate all of its tokens; pass "
                "the model's output size (model.config.vocab_size), at least len(tokenizer)"
            )
        self.vocab_size = int(num_actions)
        self.pad_id = self.vocab_size

        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        eos += _generation_config_eos_ids(getattr(tokenizer, "name_or_path", "") or "")
        for extra in eos_token_ids or ():
            eos.append(self._token_id(extra))
        if not eos:
            raise ValueError(
                f"tokenizer {tokenizer.name_or_path!r} has no eos token (eos_token_id is None), so no action "
                "could end an episode; set tokenizer.eos_token or pass eos_token_ids=[...]"
            )
        for i in eos:
            if not 0 <= i < self.num_tokens:
                raise ValueError(f"eos id {i} is outside the tokenizer's ids [0, {self.num_tokens})")
        self.eos_ids: tuple[int, ...] = tuple(dict.fromkeys(eos))
        self.eos_id = self.eos_ids[0]
        # A start marker for rewards that condition on one (n-gram LM, reward network): GPT-2 starts a text
        # with its eos token, so eos stands in where there is no bos.
        self.bos_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else self.eos_id
        unk = tokenizer.unk_token_id
        self.unk_id = None if unk is None or unk in self.eos_ids else unk  # GPT-2 names its eos "unk" too

        special = set(tokenizer.all_special_ids)
        special.update(i for i, t in tokenizer.added_tokens_decoder.items() if t.special)
        invalid = sorted(i for i in special if i not in self.eos_ids and 0 <= i < self.num_tokens)
        self.invalid_action_ids: tuple[int, ...] = (*invalid, *range(self.num_tokens, self.vocab_size))

    def _token_id(self, token: int | str) -> int:
        if isinstance(token, str):
            ids = self.hf_tokenizer.convert_tokens_to_ids([token])
            if not ids or ids[0] is None or token not in self.hf_tokenizer.get_vocab():
                raise ValueError(f"eos token {token!r} is not in the tokenizer's vocabulary")
            return int(ids[0])
        if isinstance(token, bool) or not isinstance(token, numbers.Integral):
            raise ValueError(f"eos_token_ids must hold ints or token strings, got {token!r}")
        return int(token)

    # ------------------------------------------------------------------ text <-> ids

    @property
    def model_max_length(self) -> int | None:
        """The tokenizer's ``model_max_length`` (input positions of the model), None when it sets none."""
        value = getattr(self.hf_tokenizer, "model_max_length", None)
        return int(value) if isinstance(value, int) and value < _NO_LIMIT else None

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; no special tokens are added (no bos, and no eos even where the tokenizer's
        post-processor appends one, as T5's does). Special tokens written in the text (a chat template's)
        are read as those tokens."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        return list(self.hf_tokenizer.encode(text, add_special_tokens=False, verbose=False))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """:meth:`encode` of each text, in one call of the (fast, batched) tokenizer."""
        texts = list(texts)
        if not texts:
            return []
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"encode_batch expects strs, got {type(text).__name__}")
        return [
            list(ids)
            for ids in self.hf_tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        ]

    def tokenize(self, text: str) -> list[str]:
        """The token strings of ``text`` (no special tokens added)."""
        return self.hf_tokenizer.tokenize(text, add_special_tokens=False)

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """Text of ``ids``. By default decoding stops at the first eos id and special tokens and pads are
        dropped (``skip_special_tokens=True``); ``skip_special=False`` writes every token.

        :raises ValueError: an id the tokenizer cannot decode (``>= len(tokenizer)``, or pad when
            ``skip_special=False``).
        """
        ids = ids.tolist() if hasattr(ids, "tolist") else [int(i) for i in ids]
        if skip_special:
            for k, i in enumerate(ids):
                if i in self.eos_ids:
                    ids = ids[:k]
                    break
            ids = [i for i in ids if i != self.pad_id]
        for i in ids:
            if not 0 <= i < self.num_tokens:
                raise ValueError(f"token id {i} is outside the tokenizer's ids [0, {self.num_tokens})")
        return self.hf_tokenizer.decode(ids, skip_special_tokens=skip_special)

    def apply_chat_template(self, prompt: str) -> str:
        """``prompt`` as the user's turn of the tokenizer's chat template, followed by the generation prompt
        (``apply_chat_template(..., add_generation_prompt=True, tokenize=False)``).

        :raises ValueError: the tokenizer has no chat template.
        """
        if not getattr(self.hf_tokenizer, "chat_template", None):
            raise ValueError(
                f"chat_template=True, but tokenizer {self.hf_tokenizer.name_or_path!r} has no chat template "
                "(tokenizer.chat_template is None); use an instruction-tuned model's tokenizer or set one"
            )
        messages = [{"role": "user", "content": prompt}]
        return self.hf_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    @cached_property
    def id_to_token(self) -> list[str]:
        """Token string of every id the tokenizer has (``len(tokenizer)`` entries)."""
        return list(self.hf_tokenizer.convert_ids_to_tokens(list(range(self.num_tokens))))

    # ------------------------------------------------------------------ identity and saving

    @cached_property
    def fingerprint(self) -> str:
        """A hash of what fixes the ids: the vocabulary and its special tokens, ``vocab_size`` and the eos ids.
        Equal tokenizers (two loads of one folder) have equal fingerprints."""
        tok = self.hf_tokenizer
        backend = getattr(tok, "backend_tokenizer", None)
        if backend is not None:
            vocabulary = backend.to_str()
        else:  # a slow (pure Python) tokenizer: its vocabulary stands for it
            vocabulary = json.dumps(sorted(tok.get_vocab().items()), ensure_ascii=False)
        parts = [vocabulary, json.dumps(tok.all_special_tokens), str(self.vocab_size), str(self.eos_ids)]
        return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HFTokenizer) and self.fingerprint == other.fingerprint

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __repr__(self) -> str:
        return (
            f"HFTokenizer({self.hf_tokenizer.name_or_path!r}, tokens={self.num_tokens}, "
            f"vocab_size={self.vocab_size}, eos_ids={list(self.eos_ids)})"
        )

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write the tokenizer (``save_pretrained``) and this wrapper's settings (``lmrl_tokenizer.json``:
        ``num_actions`` and the eos ids) into ``folder``; :meth:`from_pretrained` reads both back."""
        folder = Path(folder)
        self.hf_tokenizer.save_pretrained(folder)
        settings = {"format": HF_FORMAT, "num_actions": self.vocab_size, "eos_token_ids": list(self.eos_ids)}
        (folder / SETTINGS_FILE).write_text(json.dumps(settings), encoding="utf-8")

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, **kwargs: Any) -> HFTokenizer:
        """The tokenizer in ``folder``, with the settings :meth:`save_pretrained` wrote there (keyword
        arguments override them)."""
        settings_path = Path(folder) / SETTINGS_FILE
        settings: dict[str, Any] = {}
        if settings_path.is_file():
            saved = json.loads(settings_path.read_text(encoding="utf-8"))
            settings = {"num_actions": saved["num_actions"], "eos_token_ids": saved["eos_token_ids"]}
        settings.update(kwargs)
        return cls(str(folder), **settings)

    def to_dict(self) -> dict:
        """Everything needed to rebuild this tokenizer, as a JSON-able dict (the ``save_pretrained`` files,
        base64-encoded, plus the settings): what a checkpoint that embeds its tokenizer stores."""
        with tempfile.TemporaryDirectory() as tmp:
            self.hf_tokenizer.save_pretrained(tmp)
            files = {
                p.name: base64.b64encode(p.read_bytes()).decode("ascii")
                for p in sorted(Path(tmp).iterdir())
                if p.is_file()
            }
        return {
            "format": HF_FORMAT,
            "name_or_path": self.hf_tokenizer.name_or_path,
            "files": files,
            "num_actions": self.vocab_size,
            "eos_token_ids": list(self.eos_ids),
        }

    @classmethod
    def from_dict(cls, data: dict) -> HFTokenizer:
        if not isinstance(data, dict) or data.get("format") != HF_FORMAT:
            raise ValueError(f"not an lmrl_gym Hugging Face tokenizer (missing format {HF_FORMAT!r})")
        transformers = _require_transformers()
        with tempfile.TemporaryDirectory() as tmp:
            for name, content in data["files"].items():
                if Path(name).name != name:
                    raise ValueError(f"tokenizer file name {name!r} must not contain a path")
                (Path(tmp) / name).write_bytes(base64.b64decode(content))
            tokenizer = transformers.AutoTokenizer.from_pretrained(tmp)
        tokenizer.name_or_path = data.get("name_or_path", "")  # where it came from, not the temporary copy
        return cls(tokenizer, num_actions=data["num_actions"], eos_token_ids=data["eos_token_ids"])


# One wrapper per (folder or hub name, settings): a SyncVectorEnv of many envs must not load a large
# tokenizer from disk once per env. Objects are wrapped afresh (cheap; caching them would keep the user's
# object alive, and see none of its later changes).
_BY_NAME: dict[tuple, HFTokenizer] = {}


def make_hf_tokenizer(
    spec: Any, num_actions: int | None = None, eos_token_ids: Iterable[int | str] | None = None
) -> HFTokenizer:
    """An :class:`HFTokenizer` for ``spec`` (an HFTokenizer, a ``PreTrainedTokenizerBase``, a local folder
    or a hub name), shared between calls with the same arguments."""
    extra = tuple(eos_token_ids) if eos_token_ids is not None else ()
    if isinstance(spec, HFTokenizer):
        if (num_actions is None or num_actions == spec.vocab_size) and set(extra) <= set(spec.eos_ids):
            return spec
        return make_hf_tokenizer(
            spec.hf_tokenizer,
            num_actions if num_actions is not None else spec.vocab_size,
            (*spec.eos_ids, *extra),
        )
    key = (num_actions, extra)
    if isinstance(spec, (str, os.PathLike)):
        name_key = (str(spec), *key)
        if name_key not in _BY_NAME:
            _BY_NAME[name_key] = HFTokenizer(spec, num_actions, extra)
        return _BY_NAME[name_key]
    if not is_hf_tokenizer_object(spec):
        raise TypeError(
            "tokenizer must be a transformers.PreTrainedTokenizerBase, a local folder, a hub name or an "
            f"lmrl_gym.HFTokenizer, got {type(spec).__name__}"
        )
    return HFTokenizer(spec, num_actions, extra)
