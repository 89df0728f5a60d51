"""What :class:`TextGenEnv` and :class:`TextGenVectorEnv` share: argument checking, the split encoded as
padded arrays, the bound reward and the seeded choice of examples. Keeping it in one place is what makes
the vector env return exactly what a ``SyncVectorEnv`` of single envs returns."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lmrl_gym.rewards import RewardContext, make_reward
from lmrl_gym.rewards.base import Reward, RewardBatch
from lmrl_gym.rewards.pipeline import RewardPipeline
from lmrl_gym.tasks import SPLITS, Task, resolve_task
from lmrl_gym.tokenizer import Tokenizer

SAMPLING_MODES = ("random", "sequential")

# splitmix64 constants (Steele, Lea & Flood 2014): a counter-based generator, so the example of episode k
# of a seeded env is a pure function of (seed, k) and can be computed for many envs at once.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """Hash uint64 array ``x`` elementwise (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))


def episode_example_index(
    seed_keys: np.ndarray,
    episode_counts: np.ndarray,
    num_examples: int,
    sampling: str,
    num_envs: int = 1,
) -> np.ndarray:
    """Row of the split used by episode ``episode_counts[i]`` of an env seeded with ``seed_keys[i]``.

    ``"random"``: i.i.d. uniform rows from a counter-based hash; ``"sequential"``: rows
    ``seed + k * num_envs`` (mod ``num_examples``) for episode k. Env i of ``num_envs`` is seeded
    ``seed + i`` by a vector env (and by ``SyncVectorEnv``), so together the envs walk consecutive rows
    without replaying each other's. Both int64 ``[N]``.
    """
    keys = np.asarray(seed_keys, dtype=np.uint64)
    counts = np.asarray(episode_counts, dtype=np.uint64)
    n = np.uint64(num_examples)
    with np.errstate(over="ignore"):
        if sampling == "sequential":
            # Each factor reduced mod n first: (n - 1) ** 2 cannot wrap uint64 for any split that fits memory.
            stride = np.uint64(num_envs) % n
            return ((keys % n + (counts % n) * stride % n) % n).astype(np.int64)
        return (splitmix64(splitmix64(keys) ^ counts) % n).astype(np.int64)


@dataclass
class EncodedSplit:
    """A split as padded arrays (numpy, cpu). Pads are ``tokenizer.pad_id``.

    prompts int32 ``[N, P]``, prompt_lengths int64 ``[N]``, references int64 ``[N, R, L]``,
    reference_lengths int64 ``[N, R]``, reference_mask bool ``[N, R]``.
    """

    examples: list
    prompts: np.ndarray
    prompt_lengths: np.ndarray
    references: np.ndarray
    reference_lengths: np.ndarray
    reference_mask: np.ndarray
    num_truncated: int

    def __len__(self) -> int:
        return len(self.examples)

    def tensors(self, device: torch.device) -> dict[str, torch.Tensor]:
        return {
            "prompts": torch.as_tensor(self.prompts, dtype=torch.long, device=device),
            "prompt_lengths": torch.as_tensor(self.prompt_lengths, device=device),
            "references": torch.as_tensor(self.references, device=device),
            "reference_lengths": torch.as_tensor(self.reference_lengths, device=device),
            "reference_mask": torch.as_tensor(self.reference_mask, device=device),
        }


def task_lengths(task: Task) -> tuple[int, int]:
    """(longest prompt, longest reference) in tokens over every split; cached on the task."""
    cached = getattr(task, "_lmrl_lengths", None)
    if cached is None:
        tok = task.tokenizer
        prompt_len, ref_len = 1, 1
        for split in SPLITS:
            for ex in task.examples(split):
                prompt_len = max(prompt_len, len(tok.tokenize(ex.prompt)))
                ref_len = max(ref_len, *(len(tok.tokenize(r)) for r in ex.references))
        cached = (prompt_len, ref_len)
        task._lmrl_lengths = cached
    return cached


def encode_split(task: Task, split: str, max_prompt_tokens: int) -> EncodedSplit:
    """Encode ``split`` of ``task`` with its tokenizer; prompts longer than ``max_prompt_tokens`` keep
    their first ``max_prompt_tokens`` tokens. Cached on the task per (split, max_prompt_tokens)."""
    cache = task.__dict__.setdefault("_lmrl_encoded", {})
    key = (split, max_prompt_tokens)
    if key in cache:
        return cache[key]
    tok = task.tokenizer
    examples = task.examples(split)
    if not examples:
        raise ValueError(f"split {split!r} of task {task.name!r} has no examples")
    prompt_ids = [tok.encode(ex.prompt) for ex in examples]
    ref_ids = [[tok.encode(r) for r in ex.references] for ex in examples]
    n = len(examples)
    num_refs = max(len(r) for r in ref_ids)
    ref_len = max(1, max(len(r) for refs in ref_ids for r in refs))
    prompts = np.full((n, max_prompt_tokens), tok.pad_id, dtype=np.int32)
    prompt_lengths = np.zeros(n, dtype=np.int64)
    references = np.full((n, num_refs, ref_len), tok.pad_id, dtype=np.int64)
    reference_lengths = np.zeros((n, num_refs), dtype=np.int64)
    reference_mask = np.zeros((n, num_refs), dtype=bool)
    truncated = 0
    for i, (p, refs) in enumerate(zip(prompt_ids, ref_ids, strict=True)):
        truncated += len(p) > max_prompt_tokens
        p = p[:max_prompt_tokens]
        prompts[i, : len(p)] = p
        prompt_lengths[i] = len(p)
        for j, r in enumerate(refs):
            references[i, j, : len(r)] = r
            reference_lengths[i, j] = len(r)
            reference_mask[i, j] = True
    encoded = EncodedSplit(
        examples, prompts, prompt_lengths, references, reference_lengths, reference_mask, int(truncated)
    )
    cache[key] = encoded
    return encoded


class EnvSetup:
    """Resolved, validated environment arguments (see :class:`TextGenEnv` for their meaning)."""

    def __init__(
        self,
        task: Any = "numbers",
        split: str = "train",
        reward: Any = "bleu",
        max_new_tokens: int | None = None,
        max_prompt_tokens: int | None = None,
        invalid_action_penalty: float = -1.0,
        shaping: bool = False,
        sampling: str = "random",
        strict_prompt_length: bool = False,
        task_kwargs: Mapping[str, Any] | None = None,
        device: str | torch.device = "cpu",
        reward_model: Any = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid splits: {list(SPLITS)}")
        if sampling not in SAMPLING_MODES:
            raise ValueError(f"unknown sampling {sampling!r}; valid modes: {list(SAMPLING_MODES)}")
        if not np.isfinite(invalid_action_penalty):
            raise ValueError(f"invalid_action_penalty must be finite, got {invalid_action_penalty}")
        self.task: Task = resolve_task(task, task_kwargs)
        # What it takes to build the same environment on another split (evaluation does that).
        self.kwargs = {
            "task": self.task,
            "reward": reward,
            "max_new_tokens": max_new_tokens,
            "max_prompt_tokens": max_prompt_tokens,
            "invalid_action_penalty": invalid_action_penalty,
            "shaping": shaping,
            "sampling": sampling,
            "strict_prompt_length": strict_prompt_length,
        }
        self.tokenizer: Tokenizer = self.task.tokenizer
        self.split = split
        self.device = torch.device(device)
        longest_prompt, longest_reference = task_lengths(self.task)
        self.max_prompt_tokens = _positive_int("max_prompt_tokens", max_prompt_tokens, longest_prompt)
        # One extra step so the longest reference can be followed by eos.
        self.max_new_tokens = _positive_int("max_new_tokens", max_new_tokens, longest_reference + 1)
        self.invalid_action_penalty = float(invalid_action_penalty)
        self.shaping = bool(shaping)
        self.sampling = sampling
        self.data = encode_split(self.task, split, self.max_prompt_tokens)
        if self.data.num_truncated:
            message = (
                f"{self.data.num_truncated} of {len(self.data)} prompts in split {split!r} of task "
                f"{self.task.name!r} are longer than max_prompt_tokens={self.max_prompt_tokens}"
            )
            if strict_prompt_length:
                raise ValueError(message + " (strict_prompt_length=True)")
            warnings.warn(message + "; they keep their first max_prompt_tokens tokens", stacklevel=3)
        self.reward: Reward = make_reward(reward, reward_model).bind(
            RewardContext(self.task, self.tokenizer, self.device)
        )
        self.pipeline = RewardPipeline(self.reward, shaping=self.shaping)
        self.kwargs.update(
            reward=self.reward, max_new_tokens=self.max_new_tokens, max_prompt_tokens=self.max_prompt_tokens
        )
        self.tensors = self.data.tensors(self.device)
        vocab = self.tokenizer.vocab_size
        self.action_mask = np.ones(vocab, dtype=np.int8)
        self.action_mask[list(self.tokenizer.invalid_action_ids)] = 0
        self.action_mask.flags.writeable = False
        self.action_is_invalid = torch.zeros(vocab, dtype=torch.bool, device=self.device)
        self.action_is_invalid[list(self.tokenizer.invalid_action_ids)] = True

    def reward_batch(
        self,
        example_index: torch.Tensor,
        generated: torch.Tensor,
        lengths: torch.Tensor,
        ended_with_eos: torch.Tensor,
    ) -> RewardBatch:
        """A :class:`RewardBatch` for episodes of rows ``example_index`` (all tensors on ``self.device``)."""
        t = self.tensors
        return RewardBatch(
            generated=generated,
            lengths=lengths,
            ended_with_eos=ended_with_eos,
            references=t["references"][example_index],
            reference_lengths=t["reference_lengths"][example_index],
            reference_mask=t["reference_mask"][example_index],
            prompts=t["prompts"][example_index],
            prompt_lengths=t["prompt_lengths"][example_index],
            example_index=example_index,
            examples=self.data.examples,
            tokenizer=self.tokenizer,
        )


def _positive_int(name: str, value: int | None, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer or None (task default {default}), got {value!r}")
    return int(value)
