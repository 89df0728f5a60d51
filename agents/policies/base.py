"""The Policy protocol: what rollouts, algorithms, decoding, evaluation, IRL and pretraining ask of a policy.

Everything that plays or trains a policy talks to this protocol, never to a concrete class, so our own
:class:`~agents.policies.transformer.TransformerPolicy`, :class:`~agents.policies.hf.HFPolicy` (any
``transformers`` causal or encoder-decoder model) and a user's own policy are interchangeable.

Shapes: ``B`` rows (episodes), ``P`` prompt width, ``T`` actions, ``V`` logits (:attr:`Policy.vocab_size`,
the size of the env's action space), ``H`` the trunk's hidden size.

Prompts are right-padded ``[B, P]`` as the env's observation holds them, with their real lengths given
explicitly (``prompt_lengths``): a policy never infers a length from a pad id (a tokenizer may have no pad,
or pad == eos). Logits of ids the policy can never generate (:attr:`Policy.invalid_ids`) are ``-inf``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import torch

from lmrl_gym.env_setup import EnvSetup


@dataclass
class SequenceScores:
    """Per-action quantities of whole episodes from one teacher-forced pass, each ``[B, T]``.

    ``log_probs[b, t]``: log pi(a_t | s_t); ``entropy``: entropy of pi(. | s_t) in nats; ``values``: V(s_t).
    Positions at or beyond a row's length, and positions that are not the agent's (``agent_mask`` False),
    are 0.
    """

    log_probs: torch.Tensor
    entropy: torch.Tensor
    values: torch.Tensor


def score_actions(
    masked_logits: torch.Tensor,
    actions: torch.Tensor,
    values: torch.Tensor,
    scored: torch.Tensor,
    invalid_ids_mask: torch.Tensor,
) -> SequenceScores:
    """What every policy's ``evaluate_sequences`` returns, from its teacher-forced outputs.

    :param masked_logits: float ``[B, T, V]``, invalid ids already ``-inf``.
    :param actions: long ``[B, T]``, ids inside ``[0, V)`` everywhere (padding replaced by a valid id).
    :param values: float ``[B, T]``, V(s_t).
    :param scored: bool ``[B, T]``, the positions to score (inside the episode and the agent's); others are 0.
    :param invalid_ids_mask: bool ``[V]``: their zero probability adds nothing to the entropy.
    """
    log_probs_all = torch.log_softmax(masked_logits, dim=-1)
    log_probs = log_probs_all.gather(-1, actions[..., None]).squeeze(-1)
    finite = log_probs_all.masked_fill(invalid_ids_mask, 0.0)
    entropy = -(log_probs_all.exp() * finite).sum(-1)
    zero = torch.zeros((), device=masked_logits.device)
    return SequenceScores(
        log_probs=torch.where(scored, log_probs, zero),
        entropy=torch.where(scored, entropy, zero),
        values=torch.where(scored, values, zero),
    )


class DecodingState(Protocol):
    """A policy's incremental-decoding state (KV cache and whatever else it needs); opaque to callers
    except ``values``: float ``[B]``, V of each row's current state (the state the returned logits are for)."""

    values: torch.Tensor


@runtime_checkable
class Policy(Protocol):
    """A language model as an RL policy with a value head on its trunk. Also an ``nn.Module``
    (``train()``, ``eval()``, ``training``, ``parameters()``, ``state_dict()``, ``to()``).

    Attributes: ``tokenizer`` (the env's tokenizer protocol: ``encode``, ``decode``, ``pad_id``,
    ``eos_id``, ``invalid_action_ids``), ``max_prompt_tokens`` and ``max_new_tokens`` (the env's
    observation widths the policy was built for), ``value_head`` (an ``nn.Module`` ``[..., H] -> [..., 1]``
    on :meth:`hidden_states`: ``V(s_t) = value_head(h_t).squeeze(-1)``).
    """

    tokenizer: Any
    max_prompt_tokens: int
    max_new_tokens: int
    training: bool
    value_head: Any

    @property
    def vocab_size(self) -> int:
        """Number of logits per step: the size of the env's action space."""

    @property
    def device(self) -> torch.device: ...

    @property
    def invalid_ids(self) -> tuple[int, ...]:
        """Ids that get logit ``-inf`` everywhere (never generated)."""

    def prompt_lengths(self, prompt_ids: torch.Tensor) -> torch.Tensor:
        """int64 ``[B]``: real lengths of right-padded rows ``[B, P]`` of the env's observation (its
        ``prompt_ids``, and its ``prefix_ids`` too: the env pads both with the same id)."""

    def check_env(self, env: Any) -> None:
        """Raise ValueError unless ``env`` (id, env or vector env) has this policy's tokenizer, action space
        and observation widths."""

    # ------------------------------------------------------------------ incremental decoding

    def start(
        self,
        prompt_ids: torch.Tensor,
        prompt_lengths: torch.Tensor | None = None,
        max_new_tokens: int | None = None,
    ) -> tuple[torch.Tensor, DecodingState]:
        """Read right-padded prompts ``[B, P]``; return the first next-token logits ``[B, V]`` and the state.
        ``max_new_tokens``: how many tokens the state must make room for (default: the policy's)."""

    def step(self, state: DecodingState, tokens: torch.Tensor) -> tuple[torch.Tensor, DecodingState]:
        """Append one token per row (``[B]``); return the next logits ``[B, V]`` and the new state."""

    def feed(
        self, state: DecodingState, tokens: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, DecodingState]:
        """Append forced tokens: row ``b`` reads ``tokens[b, :lengths[b]]`` (``[B, K]``, ragged; 0 allowed).
        Return the logits ``[B, V]`` after each row's last token (unchanged for a row given none) and the
        state. ``step(s, x)`` equals ``feed(s, x[:, None], ones)``. A multi-turn rollout feeds a partner's
        reply this way."""

    def reorder(self, state: DecodingState, index: torch.Tensor) -> DecodingState:
        """The state of rows ``index`` (``[B']``, repeats allowed), in that order (beam search)."""

    def select(self, state: DecodingState, rows: torch.Tensor) -> DecodingState:
        """The state of the rows ``rows`` only (``[B']``, distinct, increasing): drops finished rows."""

    # ------------------------------------------------------------------ whole sequences

    def hidden_states(
        self,
        prompt_ids: torch.Tensor,
        tokens: torch.Tensor,
        lengths: torch.Tensor,
        prompt_lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """float ``[B, T, H]``: the trunk's last hidden state at each action's state ``s_t`` (the input
        of the heads that produce ``logits_t`` and ``V(s_t)``), for algorithms that add heads (ILQL)."""

    def sequence_logits(
        self,
        prompt_ids: torch.Tensor,
        tokens: torch.Tensor,
        lengths: torch.Tensor,
        prompt_lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Whole episodes in one teacher-forced pass: next-token logits float ``[B, T, V]`` at each action's
        state ``s_t`` (invalid ids ``-inf``) and values ``[B, T]``; what :meth:`evaluate_sequences` reduces
        to the actions' scores, for algorithms that need the whole distribution (NLPO renormalises it over
        a mask). Positions at or beyond a row's length hold finite logits that callers ignore."""

    def evaluate_sequences(
        self,
        prompt_ids: torch.Tensor,
        tokens: torch.Tensor,
        lengths: torch.Tensor,
        prompt_lengths: torch.Tensor | None = None,
        agent_mask: torch.Tensor | None = None,
    ) -> SequenceScores:
        """Score whole episodes in one teacher-forced pass.

        :param prompt_ids: int ``[B, P]`` right-padded prompts.
        :param tokens: int ``[B, T]`` the tokens after the prompt (actions, and in multi-turn tasks the
            partner's tokens too; eos included where an episode ended with it).
        :param lengths: int ``[B]`` tokens of each episode (positions beyond are ignored).
        :param agent_mask: bool ``[B, T]``, True where the token is the agent's action (default: all):
            the others are read as context but scored 0.
        """

    def log_likelihood(
        self,
        prompt_ids: torch.Tensor,
        tokens: torch.Tensor,
        lengths: torch.Tensor,
        prompt_lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """float ``[B, T]``: ``log p(tokens[b, t] | prompt, tokens[b, :t])`` under the language model's own
        softmax over all its logits, invalid ids included (unlike :meth:`evaluate_sequences`): the
        maximum-likelihood objective of :func:`agents.pretrain`. 0 at or beyond a row's length; differentiable."""

    def forward(self, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``policy(obs)``: next-token logits ``[B, V]`` and values ``[B]`` from a batch of the env's
        observations (``prompt_ids [B, P]``, ``prefix_ids [B, T]``), recomputing the prefix (``predict``)."""

    def frozen_copy(self) -> Any:
        """A frozen copy for the KL reference (eval mode, no gradients): it must serve
        :meth:`evaluate_sequences` and round-trip ``state_dict()`` / ``load_state_dict()`` (algorithm
        checkpoints store it that way). A LoRA policy may return its adapters only."""

    # ------------------------------------------------------------------ checkpoints

    def save(self, path: str | os.PathLike) -> None:
        """Write the policy (weights, tokenizer, widths) atomically at ``path``: one file or one folder, as
        the class's kind in :mod:`agents.policies.registry` declares (containers such as an algorithm's zip
        store it under that name and read it back with the registered class's :meth:`load`)."""

    @classmethod
    def load(cls, path: str | os.PathLike, env: Any = None, device: str | torch.device = "auto") -> Policy:
        """Read what :meth:`save` wrote; with ``env``, check that it matches."""


def env_setup_of(env: Any) -> EnvSetup:
    """The :class:`EnvSetup` behind a TextGen env: an id, a (wrapped) ``TextGenEnv`` or a vector env."""
    if isinstance(env, str):
        env = gym.make(env)
    setup = getattr(getattr(env, "unwrapped", env), "setup", None)
    if not isinstance(setup, EnvSetup):
        raise ValueError(f"expected a TextGen environment (id, TextGenEnv or TextGenVectorEnv), got {env!r}")
    return setup


def check_policy(policy: Any) -> None:
    """Raise TypeError naming what is missing unless ``policy`` implements the :class:`Policy` protocol."""
    missing = [
        name
        for name in (
            "tokenizer",
            "max_prompt_tokens",
            "max_new_tokens",
            "vocab_size",
            "device",
            "invalid_ids",
            "prompt_lengths",
            "check_env",
            "start",
            "step",
            "feed",
            "reorder",
            "select",
            "hidden_states",
            "sequence_logits",
            "evaluate_sequences",
            "log_likelihood",
            "value_head",
            "frozen_copy",
            "save",
            "load",
            "parameters",
            "train",
            "eval",
        )
        if not hasattr(policy, name)
    ]
    if missing:
        raise TypeError(
            f"{type(policy).__name__} does not implement the Policy protocol (agents.policies.base.Policy): "
            f"missing {missing}"
        )
