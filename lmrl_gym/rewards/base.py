"""The reward protocol: one call scores a batch of episodes.

A :class:`Reward` is called with a :class:`RewardBatch` and returns one float per episode. A *sequence*
reward (``per_token = False``: BLEU, exact match, a plain Python function) scores the whole generated text
and is paid when the episode ends. A *token* reward (``per_token = True``: an LM score) scores the token
just taken and is paid at every step; its sum over an episode is the sequence's score.

Every output is validated (:func:`validate_reward_output`): the wrong length, the wrong type, NaN or
infinity raise :class:`RewardError` naming the reward.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from lmrl_gym.tasks.base import Example, Task
    from lmrl_gym.tokenizer import Tokenizer


class RewardError(ValueError):
    """A reward returned something that is not one finite float per episode."""


@dataclass
class RewardContext:
    """What a reward may need to prepare itself for an environment (see :meth:`Reward.bind`)."""

    task: Task
    tokenizer: Tokenizer
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


@dataclass
class RewardBatch:
    """A batch of B episodes (finished or in progress) as tensors on one device.

    :param generated: int64 ``[B, T]`` generated token ids, padded with ``pad_id`` beyond ``lengths``;
        never contains the eos token.
    :param lengths: int64 ``[B]`` number of generated tokens (eos excluded).
    :param ended_with_eos: bool ``[B]``; True when the latest action was eos (so a token reward scores eos).
    :param references: int64 ``[B, R, L]`` reference ids, padded.
    :param reference_lengths: int64 ``[B, R]``.
    :param reference_mask: bool ``[B, R]``; False marks padding rows for examples with fewer references.
    :param prompts: int64 ``[B, P]`` prompt ids (after any truncation), padded.
    :param prompt_lengths: int64 ``[B]``.
    :param example_index: int64 ``[B]``, each episode's row in ``examples``.
    :param examples: the split's examples, for rewards that want the original strings.
    :param tokenizer: the environment's tokenizer.
    """

    generated: torch.Tensor
    lengths: torch.Tensor
    ended_with_eos: torch.Tensor
    references: torch.Tensor
    reference_lengths: torch.Tensor
    reference_mask: torch.Tensor
    prompts: torch.Tensor
    prompt_lengths: torch.Tensor
    example_index: torch.Tensor
    examples: Sequence[Example]
    tokenizer: Tokenizer

    def __len__(self) -> int:
        return int(self.generated.shape[0])

    @cached_property
    def texts(self) -> list[str]:
        """Decoded generated texts (one Python decode per episode: only string rewards ask for it)."""
        ids = self.generated.cpu().numpy()
        lengths = self.lengths.cpu().numpy()
        return [self.tokenizer.decode(row[:n]) for row, n in zip(ids, lengths, strict=True)]

    @cached_property
    def reference_texts(self) -> list[list[str]]:
        return [list(self.examples[i].references) for i in self.example_index.cpu().tolist()]

    @cached_property
    def prompt_texts(self) -> list[str]:
        return [self.examples[i].prompt for i in self.example_index.cpu().tolist()]


class Reward:
    """Base class of rewards. Subclasses set ``name`` and ``per_token`` and implement ``__call__``.

    ``__call__(batch) -> [B]`` floats: for a sequence reward, the score of each whole generated text; for a
    token reward, the reward of each episode's latest token (eos when ``batch.ended_with_eos``).
    """

    name: str = "reward"
    per_token: bool = False

    def bind(self, context: RewardContext) -> Reward:
        """Prepare for an environment (build a model from the task's training text, move to a device).

        Returns the reward to use (``self`` by default); called once when an environment is built.
        """
        return self

    def __call__(self, batch: RewardBatch) -> torch.Tensor | np.ndarray | Sequence[float]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class CallableReward(Reward):
    """A plain Python function on strings, as a sequence reward.

    ``batched=False`` (the default for a bare function): ``fn(text, references, prompt) -> float`` is called
    once per episode. ``batched=True``: ``fn(texts, references, prompts) -> list of floats`` is called once
    per batch. A function may also accept fewer arguments (``fn(text)`` or ``fn(text, references)``).
    """

    def __init__(self, fn: Callable[..., Any], name: str | None = None, batched: bool | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"a callable reward must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)
        self.batched = bool(getattr(fn, "batched", False)) if batched is None else batched
        self.n_args = _positional_arity(fn)

    def __call__(self, batch: RewardBatch) -> Sequence[float] | np.ndarray:
        args = (batch.texts, batch.reference_texts, batch.prompt_texts)[: self.n_args]
        if self.batched:
            return self.fn(*args)
        return [self.fn(*episode) for episode in zip(*args, strict=True)]


def _positional_arity(fn: Callable[..., Any]) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 3
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return 3
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not positional:
        raise TypeError("a callable reward must take the generated text as its first positional argument")
    return min(3, len(positional))


def batched(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator marking ``fn(texts, references, prompts) -> floats`` as a batched reward function."""
    fn.batched = True  # type: ignore[attr-defined]
    return fn


class WeightedSumReward(Reward):
    """``sum_i weight_i * reward_i``; token and sequence components are each paid when they are due."""

    def __init__(self, components: Sequence[tuple[Reward, float]]) -> None:
        if not components:
            raise ValueError("a weighted sum of rewards needs at least one component")
        names = [r.name for r, _ in components]
        if len(set(names)) != len(names):
            raise ValueError(f"reward components must have distinct names, got {names}")
        for reward, weight in components:
            if not isinstance(reward, Reward):
                raise TypeError(f"component {reward!r} is not a Reward")
            if not np.isfinite(weight):
                raise ValueError(f"weight of reward {reward.name!r} must be finite, got {weight}")
        self.components = [(r, float(w)) for r, w in components]
        self.name = "+".join(names)

    def bind(self, context: RewardContext) -> WeightedSumReward:
        return WeightedSumReward([(r.bind(context), w) for r, w in self.components])


def validate_reward_output(name: str, output: Any, batch_size: int, device: torch.device) -> torch.Tensor:
    """Check a reward's output and return it as float64 ``[batch_size]`` on ``device``.

    :raises RewardError: wrong type, wrong length, NaN or infinity, each message naming the reward.
    """
    if isinstance(output, torch.Tensor):
        if output.dtype == torch.bool or output.is_complex():
            raise RewardError(f"reward {name!r} returned a tensor of dtype {output.dtype}; expected floats")
        values = output.detach().to(device=device, dtype=torch.float64)
    else:
        if isinstance(output, (str, bytes, dict)) or np.isscalar(output):
            raise RewardError(
                f"reward {name!r} returned {type(output).__name__}; expected a sequence of {batch_size} "
                "floats (one per episode)"
            )
        try:
            array = np.asarray(output)
        except (TypeError, ValueError) as err:
            raise RewardError(f"reward {name!r} returned something that is not numbers: {err}") from err
        if array.dtype == object or array.dtype.kind not in "iuf":
            raise RewardError(
                f"reward {name!r} returned values of type {array.dtype}; expected floats (one per episode)"
            )
        values = torch.as_tensor(array.astype(np.float64), device=device)
    if values.ndim != 1 or values.shape[0] != batch_size:
        raise RewardError(
            f"reward {name!r} returned shape {tuple(values.shape)}; expected {batch_size} values "
            "(one per episode)"
        )
    bad = ~torch.isfinite(values)
    if bool(bad.any()):
        first = int(bad.nonzero()[0, 0])
        raise RewardError(
            f"reward {name!r} returned a non-finite value ({values[first].item()}) for episode {first}"
        )
    return values
