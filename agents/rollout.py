"""Batched, KV-cached rollouts over :class:`TextGenVectorEnv`, stored as packed trajectories (not observations)."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Protocol

import torch

from agents.policies.base import Policy
from agents.sampling import KeyedSampler, seed_from_generator
from lmrl_gym.atomic_file import atomic_path
from lmrl_gym.vector_env import TextGenVectorEnv

# Values are stored in bfloat16 (half the bytes; same range as float32, 8 significant bits: relative error at
# most 2**-8). A baseline may be any function of the state, so a rounded V_old keeps the policy gradient
# unbiased; it also enters the GAE bootstrap and the value target (returns = advantages + V_old), where the
# rounding is noise far below that of the sampled returns. Log-probs stay float32: they set the PPO ratio,
# whose clip range is 0.2, and bfloat16 would move log-probs of -5 by up to 0.02.
VALUE_STORAGE_DTYPE = torch.bfloat16
# What :meth:`Trajectories.save` writes (a torch.save dict of the dataclass's fields).
TRAJECTORIES_FORMAT = "lmrl_gym.Trajectories/1"


def smallest_int_dtype(max_value: int) -> torch.dtype:
    """The narrowest integer dtype holding ``0 .. max_value`` exactly (storage only; unpacked to int32/64)."""
    for dtype in (torch.uint8, torch.int16, torch.int32):
        if max_value <= torch.iinfo(dtype).max:
            return dtype
    return torch.int64


@dataclass
class PaddedTrajectories:
    """The ``[N, T]`` working layout of :class:`Trajectories` (T = the longest episode), built once per
    update: what the losses index. Fields as the properties of :class:`Trajectories` of the same names."""

    prompts: torch.Tensor
    tokens: torch.Tensor
    lengths: torch.Tensor
    log_probs: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    mask: torch.Tensor
    extra: torch.Tensor | None = None


@dataclass
class Trajectories:
    """N episodes stored packed: the per-step arrays concatenate episode 0's steps, then episode 1's, ...
    (no padding), and each episode's prompt is the row ``example_index[i]`` of ``prompt_table``.

    Read as padded tensors through the properties (each call unpacks, so bind the result, or use
    :meth:`unpack` for all at once): ``prompts`` ``[N, P]`` int32; ``tokens`` ``[N, T]`` int32 (the actions,
    eos included when an episode ended with it, pad after); ``lengths`` ``[N]`` int64; ``log_probs``:
    log pi_old(a_t | s_t); ``values``: V_old(s_t); ``rewards``: what the env paid at each step; ``mask``:
    bool, True for t < length; ``extra``: what a :class:`LogitsProcessor` recorded at each step (None
    without one). T is the longest episode.

    Storage (what :attr:`nbytes` counts): the step arrays (ids in the narrowest integer type of the
    vocabulary, log-probs float32, values bfloat16, see ``VALUE_STORAGE_DTYPE``, read back as float32), the
    rewards (float32 per step, or per episode when every reward came at an episode's last step, as with
    sequence-level rewards: the zeros before are implied, so both layouts are exact), the lengths and the
    example indices, and the processor's per-step record in the dtype it chose (when there is one).
    ``prompt_table`` is the env split's
    encoded prompts, which the env keeps anyway and every rollout shares; it is counted only when the
    trajectories own it (``owns_prompt_table``, e.g. built by :meth:`from_padded` from raw prompts).
    """

    prompt_table: torch.Tensor  # [E, P] right-padded prompt ids
    example_index: torch.Tensor  # [N] row of prompt_table of each episode
    step_lengths: torch.Tensor  # [N] actions per episode (narrow int)
    step_tokens: torch.Tensor  # [S] actions (narrow int), S = sum of lengths
    step_log_probs: torch.Tensor  # [S] float32
    step_values: torch.Tensor  # [S] bfloat16 (VALUE_STORAGE_DTYPE)
    step_rewards: torch.Tensor  # [S] float32, or [N] (each episode's last reward) when terminal_rewards
    terminal_rewards: bool
    width: int  # T: the longest episode
    pad_id: int
    owns_prompt_table: bool = False
    step_extra: torch.Tensor | None = None  # [S] a LogitsProcessor's record per step, in its own dtype

    # ------------------------------------------------------------------ building

    @classmethod
    def from_padded(
        cls,
        tokens: torch.Tensor,
        lengths: torch.Tensor,
        log_probs: torch.Tensor,
        values: torch.Tensor,
        rewards: torch.Tensor,
        pad_id: int,
        prompts: torch.Tensor | None = None,
        prompt_table: torch.Tensor | None = None,
        example_index: torch.Tensor | None = None,
        vocab_size: int | None = None,
        extra: torch.Tensor | None = None,
    ) -> Trajectories:
        """Pack ``[N, T]`` episodes. Prompts either as ``prompts [N, P]`` (copied and owned) or as rows
        ``example_index [N]`` of a shared ``prompt_table [E, P]``. ``vocab_size`` lets ids be stored in
        fewer bytes (default: int32). ``extra``: optional ``[N, T]`` per-step record, kept in its dtype.
        Entries at or beyond each row's length are ignored."""
        if (prompts is None) == (prompt_table is None or example_index is None):
            raise ValueError("give either prompts or both prompt_table and example_index")
        n = lengths.shape[0]
        dev = tokens.device
        owns = prompts is not None
        if owns:
            prompt_table, example_index = prompts.int().clone(), torch.arange(n, device=dev)
        width = int(lengths.max()) if n else 0
        tokens, log_probs, values, rewards = (x[:, :width] for x in (tokens, log_probs, values, rewards))
        mask = torch.arange(width, device=dev)[None, :] < lengths.to(dev)[:, None]
        token_dtype = torch.int32 if vocab_size is None else smallest_int_dtype(vocab_size - 1)
        step_rewards, terminal = _pack_rewards(rewards.float(), lengths.to(dev), mask)
        return cls(
            prompt_table=prompt_table,
            example_index=example_index.to(dev, smallest_int_dtype(max(prompt_table.shape[0] - 1, 0))),
            step_lengths=lengths.to(dev, smallest_int_dtype(width)),
            step_tokens=tokens[mask].to(token_dtype),
            step_log_probs=log_probs[mask].float(),
            step_values=values[mask].to(VALUE_STORAGE_DTYPE),
            step_rewards=step_rewards,
            terminal_rewards=terminal,
            width=width,
            pad_id=int(pad_id),
            owns_prompt_table=owns,
            step_extra=None if extra is None else extra[:, :width][mask],
        )

    # ------------------------------------------------------------------ sizes

    @property
    def num_steps(self) -> int:
        """Environment steps (actions) these episodes took."""
        return self.step_tokens.numel()

    @property
    def num_episodes(self) -> int:
        return self.step_lengths.shape[0]

    @property
    def nbytes(self) -> int:
        """Bytes of storage: what the rollout keeps in memory (see the class doc for what is counted)."""
        tensors = [
            self.example_index,
            self.step_lengths,
            self.step_tokens,
            self.step_log_probs,
            self.step_values,
            self.step_rewards,
        ]
        if self.owns_prompt_table:
            tensors.append(self.prompt_table)
        if self.step_extra is not None:
            tensors.append(self.step_extra)
        return sum(t.element_size() * t.numel() for t in tensors)

    # ------------------------------------------------------------------ padded views

    @property
    def lengths(self) -> torch.Tensor:
        return self.step_lengths.long()

    @property
    def mask(self) -> torch.Tensor:
        return torch.arange(self.width, device=self.step_lengths.device)[None, :] < self.lengths[:, None]

    @property
    def prompts(self) -> torch.Tensor:
        return self.prompt_table[self.example_index.long()].int()

    @property
    def tokens(self) -> torch.Tensor:
        return self._unpack(self.step_tokens, self.mask, self.pad_id).int()

    @property
    def log_probs(self) -> torch.Tensor:
        return self._unpack(self.step_log_probs, self.mask)

    @property
    def values(self) -> torch.Tensor:
        return self._unpack(self.step_values, self.mask).float()

    @property
    def rewards(self) -> torch.Tensor:
        return self._rewards(self.mask)

    @property
    def extra(self) -> torch.Tensor | None:
        return None if self.step_extra is None else self._unpack(self.step_extra, self.mask)

    def unpack(self) -> PaddedTrajectories:
        """All the padded views at once (one mask)."""
        mask = self.mask
        return PaddedTrajectories(
            prompts=self.prompts,
            tokens=self._unpack(self.step_tokens, mask, self.pad_id).int(),
            lengths=self.lengths,
            log_probs=self._unpack(self.step_log_probs, mask),
            values=self._unpack(self.step_values, mask).float(),
            rewards=self._rewards(mask),
            mask=mask,
            extra=None if self.step_extra is None else self._unpack(self.step_extra, mask),
        )

    def _unpack(self, packed: torch.Tensor, mask: torch.Tensor, fill: int = 0) -> torch.Tensor:
        # masked_scatter fills the True positions in row-major order: the order tensor[mask] packed them in.
        return torch.full(mask.shape, fill, dtype=packed.dtype, device=packed.device).masked_scatter(
            mask, packed
        )

    def _rewards(self, mask: torch.Tensor) -> torch.Tensor:
        if not self.terminal_rewards:
            return self._unpack(self.step_rewards, mask)
        out = torch.zeros(mask.shape, dtype=self.step_rewards.dtype, device=self.step_rewards.device)
        return out.scatter_(1, (self.lengths - 1).clamp(min=0)[:, None], self.step_rewards[:, None])

    # ------------------------------------------------------------------ derived trajectories

    def episode_returns(self) -> torch.Tensor:
        """``[N]`` total env reward of each episode."""
        return self.step_rewards.clone() if self.terminal_rewards else self.rewards.sum(1)

    def with_rewards(self, rewards: torch.Tensor) -> Trajectories:
        """A copy whose per-step rewards are ``rewards`` (``[N, T]``, the layout of :attr:`rewards`), e.g. a
        learned reward re-scored after the rollout (inverse RL). Entries beyond each episode are ignored."""
        expected = (self.num_episodes, self.width)
        if tuple(rewards.shape) != expected:
            raise ValueError(f"rewards must have shape {expected}, got {tuple(rewards.shape)}")
        mask = self.mask
        rewards = rewards.to(self.step_values.device, torch.float32)
        step_rewards, terminal = _pack_rewards(rewards, self.lengths, mask)
        return replace(self, step_rewards=step_rewards, terminal_rewards=terminal)

    def index(self, rows: torch.Tensor) -> Trajectories:
        """The episodes ``rows`` (int indices), packed."""
        rows = torch.as_tensor(rows, device=self.step_lengths.device).long()
        lengths = self.lengths
        starts = torch.cumsum(lengths, 0) - lengths
        width = int(lengths[rows].max()) if rows.numel() else 0
        cols = torch.arange(width, device=lengths.device)
        keep = cols[None, :] < lengths[rows][:, None]
        steps = (starts[rows][:, None] + cols[None, :])[keep]  # the selected episodes' steps, in order
        terminal = self.terminal_rewards
        return replace(
            self,
            example_index=self.example_index[rows],
            step_lengths=self.step_lengths[rows],
            step_tokens=self.step_tokens[steps],
            step_log_probs=self.step_log_probs[steps],
            step_values=self.step_values[steps],
            step_rewards=self.step_rewards[rows] if terminal else self.step_rewards[steps],
            width=width,
            step_extra=None if self.step_extra is None else self.step_extra[steps],
        )

    @classmethod
    def concatenate(cls, parts: list[Trajectories]) -> Trajectories:
        """One set of the episodes of ``parts``, in order (e.g. rollouts of a policy and the task's
        references, an offline data set). Packed arrays are joined as they are; prompts become one owned
        table of every episode's prompt (right-padded to the widest). Parts must share ``pad_id``; rewards
        stay per episode only where every part has them so; per-step extras are kept where every part has
        them."""
        if not parts:
            raise ValueError("concatenate needs at least one Trajectories")
        pad_ids = {part.pad_id for part in parts}
        if len(pad_ids) > 1:
            raise ValueError(
                f"the parts use different pad ids {sorted(pad_ids)}; they come from different envs"
            )
        prompt_width = max(part.prompt_table.shape[1] for part in parts)
        pad_id = parts[0].pad_id
        prompts = torch.cat(
            [
                torch.nn.functional.pad(
                    part.prompts, (0, prompt_width - part.prompt_table.shape[1]), value=pad_id
                )
                for part in parts
            ]
        )
        terminal = all(part.terminal_rewards for part in parts)
        # Per-step rewards of a per-episode part: its padded layout packed (the zeros before each end).
        rewards = [
            part.step_rewards if terminal or not part.terminal_rewards else part.rewards[part.mask]
            for part in parts
        ]
        extras = [part.step_extra for part in parts]

        def joined(name: str) -> torch.Tensor:
            tensors = [getattr(part, name) for part in parts]
            return torch.cat([t.to(torch.promote_types(tensors[0].dtype, t.dtype)) for t in tensors])

        return cls(
            prompt_table=prompts,
            example_index=torch.arange(prompts.shape[0], device=prompts.device).to(
                smallest_int_dtype(max(prompts.shape[0] - 1, 0))
            ),
            step_lengths=joined("step_lengths"),
            step_tokens=joined("step_tokens"),
            step_log_probs=joined("step_log_probs"),
            step_values=joined("step_values"),
            step_rewards=torch.cat(rewards),
            terminal_rewards=terminal,
            width=max(part.width for part in parts),
            pad_id=pad_id,
            owns_prompt_table=True,
            step_extra=None if any(e is None for e in extras) else torch.cat(extras),
        )

    # ------------------------------------------------------------------ files

    def save(self, path: str | os.PathLike) -> None:
        """Write every field (tensors in their storage dtypes, on the CPU) to ``path`` with ``torch.save``,
        atomically (a crash never leaves a half-written file). :meth:`load` gives back equal fields: same
        values, dtypes and shapes; e.g. an offline data set of rollouts (``FilteredBC``, ``ILQL``)."""
        payload = {
            "format": TRAJECTORIES_FORMAT,
            "fields": {
                f.name: value.detach().cpu()
                if isinstance(value := getattr(self, f.name), torch.Tensor)
                else value
                for f in fields(self)
            },
        }
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> Trajectories:
        """Read what :meth:`save` wrote, its tensors on ``device``.

        :raises ValueError: a missing, unreadable or truncated file, or a file that holds something else.
        """
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"no trajectories file at {path}")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many types for damaged zip / pickle data
            raise ValueError(
                f"{path} is not a readable trajectories file (corrupt or truncated?): {err}"
            ) from err
        if not isinstance(payload, dict) or payload.get("format") != TRAJECTORIES_FORMAT:
            raise ValueError(f"{path} is not a Trajectories file (format {TRAJECTORIES_FORMAT!r})")
        known = {f.name for f in fields(cls)}
        values = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in payload["fields"].items()}
        try:
            return cls(**{k: v for k, v in values.items() if k in known})
        except TypeError as err:  # a required field is missing
            raise ValueError(f"{path} holds incomplete trajectories: {err}") from err


class LogitsProcessor(Protocol):
    """An optional hook of :func:`collect_trajectories` that changes the distribution each action is
    sampled from, e.g. NLPO's mask (:class:`agents.algorithms.nlpo.TopPMask`), and says what the trajectory
    must keep of it to score the same distribution in the update.

    It is driven in lock-step with the policy, on the rows the policy's KV cache holds: :meth:`start` with
    the prompts, then per step :meth:`process`, and :meth:`select` / :meth:`step` right after the policy's
    own ``select`` / ``step`` (so it may run a second model's cache beside the policy's).
    """

    def start(self, prompt_ids: torch.Tensor) -> None:
        """Read the rollout's right-padded prompts ``[N, P]`` (the policy's ``start`` got the same)."""

    def process(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits', record)`` for the policy's next-token logits ``[B, V]`` of the rows the cache holds:
        the logits to sample from (``-inf`` where an id may not be taken; at least one finite per row) and a
        ``[B]`` record per row, stored packed in the trajectory (``Trajectories.extra``) in its own dtype:
        choose a narrow one."""

    def select(self, rows: torch.Tensor) -> None:
        """Keep the rows ``rows`` only (``[B']``, distinct, increasing), as the policy's ``select`` did."""

    def step(self, tokens: torch.Tensor) -> None:
        """Append the sampled tokens ``[B]`` of the rows held, as the policy's ``step`` did."""


def _pack_rewards(
    rewards: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, bool]:
    """``(packed, terminal)``: each episode's last reward ``[N]`` when every earlier reward is 0 (exact:
    the zeros are implied), else every step's ``[S]``. One host sync per rollout."""
    last = (lengths - 1).clamp(min=0)[:, None]
    final = rewards.gather(1, last).squeeze(1)
    earlier = mask & (torch.arange(rewards.shape[1], device=rewards.device)[None, :] < last)
    if not bool((rewards.masked_fill(~earlier, 0.0) != 0).any()):
        return final.contiguous(), True
    return rewards[mask], False


@torch.no_grad()
def collect_trajectories(
    policy: Policy,
    venv: TextGenVectorEnv,
    seed: int | torch.Generator,
    reset_options: dict | None = None,
    logits_processor: LogitsProcessor | None = None,
    *,
    stream: int = 0,
    env_offset: int = 0,
) -> Trajectories:
    """Play one episode in each of the ``venv.num_envs`` envs, all in lock-step, sampling from ``policy``.

    The prompts are read once into a KV cache; each step is one cached forward, one sampled token per row
    and one batched ``venv.step_tensors``. Rows that have ended keep stepping their env (their results are
    ignored) with an invalid action: like eos it ends the autoreset episode at once, so the env starts the
    same episodes later, but it is not scored (no reward computation for padding). Whenever at most half
    the rows the cache holds are still playing, the cache drops the ended ones (``policy.select``), so late
    steps cost what the remaining rows cost.

    Sampling is :mod:`agents.sampling`'s: env ``i``'s token at step ``t`` inverts its distribution at the
    uniform keyed by ``(seed, stream, env_offset + i, t)``, so an episode's tokens do not depend on the
    other rows of the batch (nor on which rows the cache dropped, nor on how many processes share the
    envs: ``env_offset`` is the first env's global index).

    :param policy: any :class:`~agents.policies.base.Policy`.
    :param venv: a ``TextGenVectorEnv`` with ``output="torch"`` on the policy's device.
    :param seed: the run's sampling seed; a ``torch.Generator`` instead gives a fresh seed drawn from it
        (so that successive calls with one generator differ, as they did when it drew the samples).
    :param stream: this rollout's number within the run (an algorithm counts its rollouts).
    :param env_offset: the global index of ``venv``'s first env.
    :param reset_options: passed to ``venv.reset`` (e.g. ``{"index": rows}`` for grouped prompts).
    :param logits_processor: optional :class:`LogitsProcessor`: actions are sampled from its logits, the
        stored log-probs are those of that distribution (the PPO ratio's old policy), and its per-step
        record is stored as ``extra``. Without one, nothing of it runs.
    """
    obs, _ = venv.reset(options=reset_options)
    prompts = obs["prompt_ids"].long()
    # Which split row each env plays: the prompt is stored as that index into the env's prompt table.
    example_index = venv.example_index.clone()
    n, width = prompts.shape[0], venv.setup.max_new_tokens
    dev = policy.device
    tok = policy.tokenizer
    ended_action = (tuple(policy.invalid_ids) or (tok.eos_id,))[0]
    tokens = torch.full((n, width), tok.pad_id, dtype=torch.long, device=dev)
    log_probs = torch.zeros(n, width, device=dev)
    values = torch.zeros(n, width, device=dev)
    rewards = torch.zeros(n, width, device=dev)
    active = torch.ones(n, dtype=torch.bool, device=dev)
    lengths = torch.zeros(n, dtype=torch.long, device=dev)
    extra = None  # [n, width] the logits processor's records, allocated at its first
    live = torch.arange(n, device=dev)  # the rows the KV cache holds, in its order
    was_training = policy.training
    policy.eval()
    logits, state = policy.start(prompts)
    if logits_processor is not None:
        logits_processor.start(prompts)
    if isinstance(seed, torch.Generator):
        seed = seed_from_generator(seed)
    sampler = KeyedSampler(seed, stream, env_offset + torch.arange(n, device=dev), width)
    for t in range(width):
        if logits_processor is not None:
            logits, record = logits_processor.process(logits)
        log_p = torch.log_softmax(logits, dim=-1)
        dropped = live.shape[0] < n
        # Only the rows the cache holds are sampled: each row's uniform is its own, whatever the others do.
        action = sampler.sample_probs(log_p.exp(), t, live if dropped else None)
        action_log_p, step_values = log_p.gather(1, action[:, None]).squeeze(1), state.values
        if dropped:
            action = torch.full((n,), ended_action, device=dev).index_copy_(0, live, action)
            action_log_p = torch.zeros(n, device=dev).index_copy_(0, live, action_log_p)
            step_values = torch.zeros(n, device=dev).index_copy_(0, live, step_values)
        if logits_processor is not None:
            if extra is None:
                extra = torch.zeros(n, width, dtype=record.dtype, device=dev)
            extra[live, t] = torch.where(active[live], record, torch.zeros_like(record))
        tokens[:, t] = torch.where(active, action, tokens[:, t])
        log_probs[:, t] = torch.where(active, action_log_p, 0.0)
        values[:, t] = torch.where(active, step_values, 0.0)
        reward, terminated, truncated = venv.step_tensors(torch.where(active, action, ended_action))
        rewards[:, t] = torch.where(active, reward.to(dev, torch.float32), 0.0)
        lengths += active.long()
        active &= ~(terminated | truncated).to(dev)
        playing = int(active.sum())  # the one host read per step
        if playing == 0:
            break
        if playing <= live.shape[0] // 2:
            keep = active[live].nonzero().squeeze(1)
            state, live = policy.select(state, keep), live[keep]
            if logits_processor is not None:
                logits_processor.select(keep)
        logits, state = policy.step(state, action[live])
        if logits_processor is not None:
            logits_processor.step(action[live])
    policy.train(was_training)
    return Trajectories.from_padded(
        tokens,
        lengths,
        log_probs,
        values,
        rewards,
        pad_id=policy.tokenizer.pad_id,
        prompt_table=venv.setup.tensors["prompts"],
        example_index=example_index,
        vocab_size=policy.vocab_size,
        extra=extra,
    )
