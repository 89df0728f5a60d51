"""Loading ``transformers`` models and tokenizers for rewards, without importing ``transformers`` early.

``import lmrl_gym`` must work without ``transformers``: every import of it here sits inside a function
that only runs when a user hands a reward a model name, a path or a ``transformers`` object.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import torch


def is_transformers_model(obj: Any) -> bool:
    """True for a ``transformers.PreTrainedModel``; never imports ``transformers`` to find out (an object
    can only be one if the user already imported it)."""
    if "transformers" not in sys.modules:
        return False
    from transformers import PreTrainedModel

    return isinstance(obj, PreTrainedModel)


def is_transformers_tokenizer(obj: Any) -> bool:
    """True for a ``transformers.PreTrainedTokenizerBase`` (same rule as :func:`is_transformers_model`)."""
    if "transformers" not in sys.modules:
        return False
    from transformers import PreTrainedTokenizerBase

    return isinstance(obj, PreTrainedTokenizerBase)


def is_name_or_path(obj: Any) -> bool:
    return isinstance(obj, (str, os.PathLike))


def load_model(source: str | os.PathLike, auto_class: str, architecture_suffixes: Sequence[str], what: str):
    """``transformers.<auto_class>.from_pretrained(source)``, refusing a checkpoint of another kind.

    A causal LM folder loads "successfully" as a sequence classifier (and the reverse) with a freshly
    initialised, random head, and ``transformers`` only logs it. A reward built on random weights is a
    silent bug, so the folder's ``config.architectures`` is checked first and any weight the checkpoint
    lacks is an error.

    :param auto_class: ``"AutoModelForSequenceClassification"`` or ``"AutoModelForCausalLM"``.
    :param architecture_suffixes: class-name endings of the accepted architectures,
        e.g. ``("ForSequenceClassification",)``.
    :param what: how errors name the expected model ("a sequence classifier").
    :return: the model, in eval mode.
    :raises ValueError: not a checkpoint, or a checkpoint of another kind.
    """
    import transformers

    source = os.fspath(source)
    try:
        config = transformers.AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise ValueError(
            f"cannot load {what} from {source!r}: it is not a checkpoint folder or hub name ({err})"
        ) from err
    architectures = list(getattr(config, "architectures", None) or [])
    if architectures and not any(a.endswith(tuple(architecture_suffixes)) for a in architectures):
        raise ValueError(
            f"{source!r} holds a {' / '.join(architectures)}, not {what} (expected an architecture ending in "
            f"{' or '.join(architecture_suffixes)}, loadable with transformers.{auto_class})"
        )
    model, info = getattr(transformers, auto_class).from_pretrained(source, output_loading_info=True)
    if info.get("missing_keys"):
        missing = sorted(info["missing_keys"])
        raise ValueError(
            f"{source!r} is not {what}: loading it with transformers.{auto_class} left weights "
            f"{missing[:5]}{' ...' if len(missing) > 5 else ''} randomly initialised"
        )
    return model.eval()


def load_tokenizer(tokenizer: Any, model: Any, source: Any, what: str):
    """The model's own tokenizer: ``tokenizer`` as given (object, name or path), else loaded from where the
    model came from (``source`` when it is a name or path, else the model's ``name_or_path``).

    :raises ValueError: nothing to load it from, or loading failed.
    """
    if tokenizer is not None and not is_name_or_path(tokenizer):
        if not is_transformers_tokenizer(tokenizer):
            raise TypeError(
                f"tokenizer of {what} must be a transformers tokenizer, a name or a path, "
                f"got {type(tokenizer).__name__}"
            )
        return tokenizer
    from_where = tokenizer if tokenizer is not None else source
    if from_where is None or not is_name_or_path(from_where):
        from_where = getattr(model, "name_or_path", None) or None
    if from_where is None:
        raise ValueError(
            f"{what} was given as an object without a name_or_path; pass tokenizer= (its own tokenizer)"
        )
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(os.fspath(from_where))
    except (OSError, ValueError) as err:
        raise ValueError(
            f"cannot load the tokenizer of {what} from {os.fspath(from_where)!r}: {err}"
        ) from err


def max_positions(model: Any, tokenizer: Any) -> int | None:
    """The longest input (tokens) the model takes: its position table, or the tokenizer's
    ``model_max_length`` when smaller; ``None`` when neither says (relative positions)."""
    config = getattr(model, "config", None)
    limits = [getattr(config, key, None) for key in ("max_position_embeddings", "n_positions")]
    # Tokenizers without a known limit report a huge sentinel (int(1e30)), which is no limit at all.
    limits.append(getattr(tokenizer, "model_max_length", None))
    limits = [int(n) for n in limits if isinstance(n, int) and 0 < n < 1_000_000_000]
    return min(limits) if limits else None


def model_device(model: Any) -> torch.device:
    """Where the model's inputs go (its first parameter's device; CPU for a parameter-less callable)."""
    parameters = getattr(model, "parameters", None)
    if callable(parameters):
        for parameter in parameters():
            return parameter.device
    return torch.device("cpu")


def wrapped_transformers_tokenizer(tokenizer: Any):
    """The ``transformers`` tokenizer behind an environment's tokenizer, or ``None`` (a word tokenizer).

    An environment's tokenizer keeps :mod:`lmrl_gym`'s protocol; a wrapper of a ``transformers`` tokenizer
    holds the original as an attribute: ``hf_tokenizer`` (:class:`lmrl_gym.HFTokenizer`'s), else any
    instance attribute holding one, so another wrapper is recognised too.
    """
    if is_transformers_tokenizer(tokenizer):
        return tokenizer
    if is_transformers_tokenizer(getattr(tokenizer, "hf_tokenizer", None)):
        return tokenizer.hf_tokenizer
    for value in getattr(tokenizer, "__dict__", {}).values():
        if is_transformers_tokenizer(value):
            return value
    return None


def same_vocabulary(a: Any, b: Any) -> bool:
    """True when two ``transformers`` tokenizers map every token to the same id."""
    return a is b or (len(a) == len(b) and a.get_vocab() == b.get_vocab())


def pad_right(
    rows: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists into ``(ids int64 [B, L], attention_mask int64 [B, L])``.

    Right padding leaves every real token at its own position (absolute position tables such as GPT-2's
    ignore the attention mask) and, for causal models, unseen by the pads that follow it.
    """
    width = max((len(row) for row in rows), default=0)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids.to(device), mask.to(device)
