"""Batched, KV-cached rollouts over :class:`TextGenVectorEnv`, stored as trajectories (not observations)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from agents.policy import TransformerPolicy
from lmrl_gym.vector_env import TextGenVectorEnv


@dataclass
class Trajectories:
    """N episodes, one row each, all ``[N, T]`` unless noted (T = the longest episode of the rollout).

    ``prompts`` ``[N, P]`` (int32); ``tokens`` (int32): the actions (eos included when an episode ended with it), pad after;
    ``lengths`` ``[N]``: actions per episode; ``log_probs``: log pi_old(a_t | s_t); ``values``: V_old(s_t);
    ``rewards``: what the env paid at each step; ``mask``: bool, True for t < length.
    """

    prompts: torch.Tensor
    tokens: torch.Tensor
    lengths: torch.Tensor
    log_probs: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    mask: torch.Tensor

    @property
    def num_steps(self) -> int:
        """Environment steps (actions) these episodes took."""
        return int(self.lengths.sum())

    @property
    def nbytes(self) -> int:
        """Bytes of storage: what the rollout costs in memory."""
        return sum(getattr(self, f.name).element_size() * getattr(self, f.name).numel() for f in fields(self))

    def episode_returns(self) -> torch.Tensor:
        """``[N]`` total env reward of each episode."""
        return self.rewards.sum(1)

    def with_rewards(self, rewards: torch.Tensor) -> Trajectories:
        """A copy whose per-step rewards are ``rewards`` (``[N, T]``, the layout of :attr:`rewards`), e.g. a
        learned reward re-scored after the rollout (inverse RL)."""
        if rewards.shape != self.rewards.shape:
            raise ValueError(f"rewards must have shape {tuple(self.rewards.shape)}, got {tuple(rewards.shape)}")
        return replace(self, rewards=rewards.to(self.rewards.device, self.rewards.dtype) * self.mask)

    def index(self, rows: torch.Tensor) -> Trajectories:
        return Trajectories(*(getattr(self, f.name)[rows] for f in fields(self)))


@torch.no_grad()
def collect_trajectories(
    policy: TransformerPolicy,
    venv: TextGenVectorEnv,
    generator: torch.Generator,
    reset_options: dict | None = None,
) -> Trajectories:
    """Play one episode in each of the ``venv.num_envs`` envs, all in lock-step, sampling from ``policy``.

    The prompts are read once into a KV cache; each step is one cached forward for all rows, one sampled
    token per row and one batched ``venv.step``. Rows that have ended keep receiving eos (their results
    are ignored) until every row has ended, so the cache stays aligned.

    :param venv: a ``TextGenVectorEnv`` with ``output="torch"`` on the policy's device.
    :param generator: the sampling generator (on the policy's device).
    :param reset_options: passed to ``venv.reset`` (e.g. ``{"index": rows}`` for grouped prompts).
    """
    obs, _ = venv.reset(options=reset_options)
    prompts = obs["prompt_ids"].long()
    n, width = prompts.shape[0], venv.setup.max_new_tokens
    dev = policy.device
    eos = policy.tokenizer.eos_id
    tokens = torch.full((n, width), policy.tokenizer.pad_id, dtype=torch.long, device=dev)
    log_probs = torch.zeros(n, width, device=dev)
    values = torch.zeros(n, width, device=dev)
    rewards = torch.zeros(n, width, device=dev)
    active = torch.ones(n, dtype=torch.bool, device=dev)
    lengths = torch.zeros(n, dtype=torch.long, device=dev)
    was_training = policy.training
    policy.eval()
    logits, state = policy.start(prompts)
    for t in range(width):
        log_p = torch.log_softmax(logits, dim=-1)
        action = torch.multinomial(log_p.exp(), 1, generator=generator).squeeze(1)
        action = torch.where(active, action, eos)
        tokens[:, t] = torch.where(active, action, tokens[:, t])
        log_probs[:, t] = torch.where(active, log_p.gather(1, action[:, None]).squeeze(1), 0.0)
        values[:, t] = torch.where(active, state.values, 0.0)
        _, reward, terminated, truncated, _ = venv.step(action)
        rewards[:, t] = torch.where(active, reward.to(dev, torch.float32), 0.0)
        lengths += active.long()
        active &= ~(terminated | truncated).to(dev)
        if not bool(active.any()):
            break
        logits, state = policy.step(state, action)
    policy.train(was_training)
    # Keep only the columns some episode used, and ids as int32: storage is per step actually taken.
    used = int(lengths.max())
    mask = torch.arange(used, device=dev)[None, :] < lengths[:, None]
    return Trajectories(
        prompts.int(),
        tokens[:, :used].int(),
        lengths,
        log_probs[:, :used],
        values[:, :used],
        rewards[:, :used],
        mask,
    )
