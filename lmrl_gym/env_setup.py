"""What :class:`TextGenEnv` and :class:`TextGenVectorEnv` share: argument checking, the split encoded as
padded arrays, the bound reward and the seeded choice of examples. Keeping it in one place is what makes
the vector env return exactly what a ``SyncVectorEnv`` of single envs returns."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lmrl_gym.rewards import LMScoreReward, RewardContext, make_reward
from lmrl_gym.rewards.base import Reward, RewardBatch, WeightedSumReward
from lmrl_gym.rewards.pipeline import RewardPipeline
from lmrl_gym.tasks import SPLITS, Task, resolve_task
from lmrl_gym.tokenizer import Tokenizer

if TYPE_CHECKING:
    from lmrl_gym.hf_tokenizer import HFTokenizer

    AnyTokenizer = Tokenizer | HFTokenizer

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


def resolve_tokenizer(
    task: Task, tokenizer: Any = None, num_actions: int | None = None, eos_token_ids: Any = None
) -> AnyTokenizer:
    """The env's tokenizer: the task's word tokenizer (``tokenizer=None``), or an :class:`HFTokenizer` of a
    ``transformers`` tokenizer, a local folder or a hub name."""
    if tokenizer is None:
        if num_actions is not None or eos_token_ids is not None:
            raise ValueError(
                "num_actions and eos_token_ids apply to a Hugging Face tokenizer (tokenizer=...); the task's "
                "word tokenizer has exactly vocab_size actions and one eos"
            )
        return task.tokenizer
    if isinstance(tokenizer, Tokenizer):
        raise ValueError(
            "tokenizer= takes a Hugging Face tokenizer (a transformers tokenizer, a local folder or a hub "
            "name); the word tokenizer is built from the task itself (leave tokenizer=None)"
        )
    from lmrl_gym.hf_tokenizer import make_hf_tokenizer

    return make_hf_tokenizer(tokenizer, num_actions, eos_token_ids)


def _encoding_key(tokenizer: AnyTokenizer, chat_template: bool) -> tuple:
    if isinstance(tokenizer, Tokenizer):
        return ("word",)  # the task's own word tokenizer (resolve_tokenizer allows no other)
    if chat_template:
        return (tokenizer.fingerprint, "chat", tokenizer.hf_tokenizer.chat_template)
    return (tokenizer.fingerprint,)


def encoded_texts(
    task: Task, tokenizer: AnyTokenizer | None = None, chat_template: bool = False
) -> dict[str, tuple[list[list[int]], list[list[list[int]]]]]:
    """Every split's prompt ids and reference ids (lists, unpadded), cached on the task per tokenizer.

    ``chat_template=True`` wraps each prompt in the tokenizer's chat template first. Each split is encoded
    in one batched call of the tokenizer (a Hugging Face fast tokenizer encodes in parallel, in Rust).
    """
    tokenizer = task.tokenizer if tokenizer is None else tokenizer
    cache = task.__dict__.setdefault("_lmrl_token_ids", {})
    key = _encoding_key(tokenizer, chat_template)
    if key not in cache:
        out = {}
        for split in SPLITS:
            examples = task.examples(split)
            prompts = [ex.prompt for ex in examples]
            if chat_template:
                prompts = [tokenizer.apply_chat_template(p) for p in prompts]
            prompt_ids = tokenizer.encode_batch(prompts)
            flat = iter(tokenizer.encode_batch([r for ex in examples for r in ex.references]))
            ref_ids = [[next(flat) for _ in ex.references] for ex in examples]
            out[split] = (prompt_ids, ref_ids)
        cache[key] = out
    return cache[key]


def task_lengths(
    task: Task, tokenizer: AnyTokenizer | None = None, chat_template: bool = False
) -> tuple[int, int]:
    """(longest prompt, longest reference) in tokens of ``tokenizer`` (default: the task's) over every
    split, at least 1 each (prompt-only data: 1 for the reference)."""
    prompt_len, ref_len = 1, 1
    for prompt_ids, ref_ids in encoded_texts(task, tokenizer, chat_template).values():
        prompt_len = max(prompt_len, max((len(p) for p in prompt_ids), default=0))
        ref_len = max(ref_len, max((len(r) for refs in ref_ids for r in refs), default=0))
    return prompt_len, ref_len


def encode_split(
    task: Task,
    split: str,
    max_prompt_tokens: int,
    tokenizer: AnyTokenizer | None = None,
    chat_template: bool = False,
) -> EncodedSplit:
    """Encode ``split`` of ``task`` with ``tokenizer`` (default: the task's word tokenizer); prompts longer
    than ``max_prompt_tokens`` keep their first ``max_prompt_tokens`` tokens. Cached on the task per
    (tokenizer, chat template, split, max_prompt_tokens)."""
    tokenizer = task.tokenizer if tokenizer is None else tokenizer
    cache = task.__dict__.setdefault("_lmrl_encoded", {})
    key = (_encoding_key(tokenizer, chat_template), split, max_prompt_tokens)
    if key in cache:
        return cache[key]
    examples = task.examples(split)
    if not examples:
        raise ValueError(f"split {split!r} of task {task.name!r} has no examples")
    prompt_ids, ref_ids = encoded_texts(task, tokenizer, chat_template)[split]
    pad = tokenizer.pad_id
    n = len(examples)
    # Prompt-only data has no references: one absent reference per row keeps the shapes non-empty.
    num_refs = max(1, max(len(r) for r in ref_ids))
    ref_len = max(1, max((len(r) for refs in ref_ids for r in refs), default=0))
    prompts = np.full((n, max_prompt_tokens), pad, dtype=np.int32)
    prompt_lengths = np.zeros(n, dtype=np.int64)
    references = np.full((n, num_refs, ref_len), pad, dtype=np.int64)
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


def reward_components(reward: Reward) -> list[Reward]:
    """The parts of a (possibly weighted-sum) reward."""
    return [r for r, _ in reward.components] if isinstance(reward, WeightedSumReward) else [reward]


def needs_references(reward: Reward) -> bool:
    """Whether ``reward`` reads the references: BLEU and exact match score against them, and the n-gram LM
    score is fitted on the training references (unless given a model)."""
    if getattr(reward, "needs_references", False):
        return True
    return isinstance(reward, LMScoreReward) and reward.model is None


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
        tokenizer: Any = None,
        num_actions: int | None = None,
        eos_token_ids: Any = None,
        chat_template: bool = False,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid splits: {list(SPLITS)}")
        if sampling not in SAMPLING_MODES:
            raise ValueError(f"unknown sampling {sampling!r}; valid modes: {list(SAMPLING_MODES)}")
        if not np.isfinite(invalid_action_penalty):
            raise ValueError(f"invalid_action_penalty must be finite, got {invalid_action_penalty}")
        if not isinstance(chat_template, (bool, np.bool_)):
            raise ValueError(f"chat_template must be True or False, got {chat_template!r}")
        self.task: Task = resolve_task(task, task_kwargs)
        self.tokenizer: AnyTokenizer = resolve_tokenizer(self.task, tokenizer, num_actions, eos_token_ids)
        self.is_hf = not isinstance(self.tokenizer, Tokenizer)
        if chat_template and not self.is_hf:
            raise ValueError(
                "chat_template=True needs a Hugging Face tokenizer with a chat template (tokenizer=...); the "
                "task's word tokenizer has none"
            )
        if chat_template:
            self.tokenizer.apply_chat_template("")  # fails now, naming the tokenizer, if it has no template
        self.chat_template = bool(chat_template)
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
            "tokenizer": self.tokenizer if self.is_hf else None,
            "chat_template": self.chat_template,
        }
        self.split = split
        self.device = torch.device(device)
        longest_prompt, longest_reference = task_lengths(self.task, self.tokenizer, self.chat_template)
        self.max_prompt_tokens = self._prompt_width(max_prompt_tokens, longest_prompt)
        if max_new_tokens is None and not self.task.has_references:
            raise ValueError(
                f"task {self.task.name!r} has no references (prompt-only data), so max_new_tokens has no "
                "default (the longest reference + 1); pass max_new_tokens=..."
            )
        # One extra step so the longest reference can be followed by eos.
        self.max_new_tokens = _positive_int("max_new_tokens", max_new_tokens, longest_reference + 1)
        self.invalid_action_penalty = float(invalid_action_penalty)
        self.shaping = bool(shaping)
        self.sampling = sampling
        self.data = self.encoded(split)
        if self.data.num_truncated:
            message = (
                f"{self.data.num_truncated} of {len(self.data)} prompts in split {split!r} of task "
                f"{self.task.name!r} are longer than max_prompt_tokens={self.max_prompt_tokens}"
            )
            if strict_prompt_length:
                raise ValueError(message + " (strict_prompt_length=True)")
            warnings.warn(message + "; they keep their first max_prompt_tokens tokens", stacklevel=3)
        unbound = make_reward(reward, reward_model)
        if not self.task.has_references:
            needing = [r.name for r in reward_components(unbound) if needs_references(r)]
            if needing:
                raise ValueError(
                    f"reward {needing} needs references, but task {self.task.name!r} has none (prompt-only "
                    "data); use a reward that needs no references (a classifier, a function of the text) or "
                    "data with a reference column"
                )
        self.reward: Reward = unbound.bind(RewardContext(self.task, self.tokenizer, self.device))
        self.pipeline = RewardPipeline(self.reward, shaping=self.shaping)
        self.kwargs.update(
            reward=self.reward, max_new_tokens=self.max_new_tokens, max_prompt_tokens=self.max_prompt_tokens
        )
        self.tensors = self.data.tensors(self.device)
        vocab = self.tokenizer.vocab_size
        invalid = list(self.tokenizer.invalid_action_ids)
        self.action_mask = np.ones(vocab, dtype=np.int8)
        self.action_mask[invalid] = 0
        self.action_mask.flags.writeable = False
        self.action_is_invalid = torch.zeros(vocab, dtype=torch.bool, device=self.device)
        self.action_is_invalid[invalid] = True
        # Every id that ends a text (a Hugging Face tokenizer may have several), as a lookup table.
        self.eos_ids = tuple(self.tokenizer.eos_ids)
        self.action_is_eos = torch.zeros(vocab, dtype=torch.bool, device=self.device)
        self.action_is_eos[list(self.eos_ids)] = True

    def _prompt_width(self, requested: int | None, longest_prompt: int) -> int:
        """``max_prompt_tokens``: as requested, else the longest prompt, capped at the tokenizer's
        ``model_max_length`` (the model's input positions) where it sets one: a default over the limit is
        cut to it (prompts then truncate, with the usual warning); a request over it is an error."""
        width = _positive_int("max_prompt_tokens", requested, longest_prompt)
        limit = self.tokenizer.model_max_length
        if limit is not None and width > limit:
            if requested is not None:
                raise ValueError(
                    f"max_prompt_tokens={requested} exceeds the tokenizer's model_max_length={limit} (the "
                    f"model's input positions); pass max_prompt_tokens <= {limit}"
                )
            width = limit
        return width

    def encoded(self, split: str) -> EncodedSplit:
        """``split`` encoded as this environment encodes its own: same tokenizer, chat template and prompt
        width (``pretrain`` reads the train split of an env made on another)."""
        return encode_split(self.task, split, self.max_prompt_tokens, self.tokenizer, self.chat_template)

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
