"""``TransformerPolicy``: our own transformer language model (:mod:`agents.models`) as an RL policy.

It implements the whole :class:`~agents.policies.base.Policy` protocol, so rollouts, every algorithm,
decoding, evaluation, IRL and pretraining take it as they take any other policy.
"""

from __future__ import annotations

import contextlib
import copy
import os
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from agents.devices import bf16_autocast_applies, resolve_device
from agents.models import ARCHS, KVCache, TransformerConfig, TransformerLM
from agents.policies.base import SequenceScores, env_setup_of, score_actions
from lmrl_gym.atomic_file import atomic_path
from lmrl_gym.tokenizer import Tokenizer

# Unchanged since round 1, so that round-1 checkpoints load as they are.
CHECKPOINT_FORMAT = "lmrl_gym.TransformerPolicy/1"

__all__ = ["CHECKPOINT_FORMAT", "DecodingState", "SequenceScores", "TransformerPolicy", "env_setup_of"]


@dataclass
class DecodingState:
    """What :meth:`TransformerPolicy.step` and :meth:`~TransformerPolicy.feed` need: the KV cache, the value
    of each row's current state and the logits it was given last (a row fed no token keeps them)."""

    cache: KVCache
    values: torch.Tensor  # float [B]
    logits: torch.Tensor  # float [B, V], invalid ids -inf; read-only (callers get the same tensor)

    def rows(self, index: torch.Tensor) -> DecodingState:
        return DecodingState(
            self.cache.reorder(index), self.values.index_select(0, index), self.logits.index_select(0, index)
        )


# One compiled decode step per model (weakly held): a policy's deep copy (a frozen reference) has a model
# of its own and compiles its own step, rather than calling the original's.
_COMPILED_STEPS: weakref.WeakKeyDictionary[TransformerLM, Any] = weakref.WeakKeyDictionary()


# torch.compile's options for the decode step: dynamic shapes (the cache grows every step, rows drop out),
# torch's default backend (inductor). Tests may swap the backend for a faster one.
COMPILE_OPTIONS: dict[str, Any] = {"dynamic": True}


def compiled_step(model: TransformerLM) -> Any:
    """``torch.compile(model.step, **COMPILE_OPTIONS)``, made once per model."""
    step = _COMPILED_STEPS.get(model)
    if step is None:
        step = _COMPILED_STEPS[model] = torch.compile(model.step, **COMPILE_OPTIONS)
    return step


class TransformerPolicy(nn.Module):
    """A :class:`TransformerLM` with the environment's tokenizer and lengths, exposing what RL needs: the
    :class:`~agents.policies.base.Policy` protocol.

    - :meth:`start` / :meth:`step` / :meth:`feed` / :meth:`reorder` / :meth:`select`: KV-cached incremental
      decoding (next-token logits and state values for a batch); :meth:`feed` reads a different number of
      forced tokens per row, leaving masked holes in the cache (see :class:`~agents.models.KVCache`).
    - :meth:`evaluate_sequences`: log-probabilities, entropies and values of whole given episodes in one
      teacher-forced forward pass; :meth:`hidden_states`: the trunk's output there, the heads' input;
      :meth:`log_likelihood`: the language model's own (unmasked) log-likelihood, for MLE pretraining.
    - :meth:`forward`: next-token logits and values from observations (full recompute, as SB3 does).

    Ids that can never be generated (pad, bos, unk) get logit -inf everywhere.

    :param config: the model's sizes.
    :param tokenizer: the environment's tokenizer (saved with the policy).
    :param max_prompt_tokens: / :param max_new_tokens: the environment's observation widths.
    :param device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ...
    :param bf16_autocast: run the model under bfloat16 autocast (weights, optimizer and losses stay fp32;
        the KV cache is bf16) on CUDA and on CPUs with bf16 units (AMX or AVX-512 BF16); ignored on other
        CPUs, which stay fp32 (see :func:`agents.devices.bf16_autocast_applies`).
    :param compile: run each decode step (:meth:`step`) through ``torch.compile`` (dynamic shapes: the
        cache grows and rows drop out without recompiling), which fuses its small operators. The first
        rollout pays the compilation (seconds to a minute; needs a C++ compiler on CPU); the same tokens
        up to float rounding. Default CUDA mode, no CUDA graphs (not yet measured on a GPU).
    """

    def __init__(
        self,
        config: TransformerConfig,
        tokenizer: Tokenizer,
        max_prompt_tokens: int,
        max_new_tokens: int,
        device: str | torch.device = "auto",
        bf16_autocast: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        if config.vocab_size != tokenizer.vocab_size:
            raise ValueError(
                f"config.vocab_size={config.vocab_size} but the tokenizer has {tokenizer.vocab_size} tokens"
            )
        if (config.pad_id, config.bos_id) != (tokenizer.pad_id, tokenizer.bos_id):
            raise ValueError("config pad_id / bos_id must be the tokenizer's")
        self.config = config
        self.tokenizer = tokenizer
        self.max_prompt_tokens = int(max_prompt_tokens)
        self.max_new_tokens = int(max_new_tokens)
        self.model = TransformerLM(config)
        self.model.check_lengths(self.max_prompt_tokens, self.max_new_tokens)
        invalid = torch.zeros(config.vocab_size, dtype=torch.bool)
        invalid[list(tokenizer.invalid_action_ids)] = True
        self.register_buffer("invalid_ids_mask", invalid, persistent=False)
        self.to(resolve_device(device))
        self.bf16_autocast = bool(bf16_autocast)
        # Not named `compile`: that is nn.Module's own method.
        self.compile_decoding = bool(compile)

    # ------------------------------------------------------------------ construction

    @classmethod
    def for_env(
        cls,
        env: Any,
        arch: str = "causal",
        n_layer: int = 2,
        n_head: int = 4,
        n_embd: int = 128,
        dropout: float = 0.0,
        n_encoder_layer: int | None = None,
        device: str | torch.device = "auto",
        bf16_autocast: bool = False,
        compile: bool = False,
    ) -> TransformerPolicy:
        """A fresh policy sized for ``env`` (an id, a ``TextGenEnv`` or a ``TextGenVectorEnv``): vocabulary,
        pad / bos ids and observation widths are read from it."""
        if arch not in ARCHS:
            raise ValueError(f"unknown arch {arch!r}; valid: {list(ARCHS)}")
        setup = env_setup_of(env)
        p, t = setup.max_prompt_tokens, setup.max_new_tokens
        positions = p + 1 + t if arch == "causal" else max(p, t) + 1
        config = TransformerConfig(
            vocab_size=setup.tokenizer.vocab_size,
            arch=arch,
            n_layer=n_layer,
            n_head=n_head,
            n_embd=n_embd,
            max_positions=positions,
            dropout=dropout,
            pad_id=setup.tokenizer.pad_id,
            bos_id=setup.tokenizer.bos_id,
            n_encoder_layer=n_encoder_layer,
        )
        return cls(config, setup.tokenizer, p, t, device=device, bf16_autocast=bf16_autocast, compile=compile)

    def check_env(self, env: Any) -> None:
        """Raise ValueError unless ``env`` has this policy's tokenizer and fits its lengths."""
        setup = env_setup_of(env)
        if setup.tokenizer != self.tokenizer:
            raise ValueError(
                f"the policy's tokenizer ({self.tokenizer.vocab_size} tokens) does not match the env's "
                f"({setup.tokenizer.vocab_size} tokens, task {setup.task.name!r}); build the policy for this env"
            )
        if setup.max_prompt_tokens != self.max_prompt_tokens or setup.max_new_tokens != self.max_new_tokens:
            raise ValueError(
                f"the policy was built for max_prompt_tokens={self.max_prompt_tokens}, "
                f"max_new_tokens={self.max_new_tokens}; the env has {setup.max_prompt_tokens}, "
                f"{setup.max_new_tokens}"
            )

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def vocab_size(self) -> int:
        """Logits per step: the tokenizer's vocabulary, the size of the env's action space."""
        return self.config.vocab_size

    @property
    def invalid_ids(self) -> tuple[int, ...]:
        return self.tokenizer.invalid_action_ids

    @property
    def value_head(self) -> nn.Module:
        """``[..., C] -> [..., 1]`` on :meth:`hidden_states`: V(s) = ``value_head(h).squeeze(-1)``."""
        return self.model.value_head

    @property
    def value_trunk_gradient(self) -> bool:
        """Whether the value loss's gradient reaches the trunk (True) or only the value head (False: V reads
        detached features, as a separate critic would leave the language model alone)."""
        return self.model.value_trunk_gradient

    @value_trunk_gradient.setter
    def value_trunk_gradient(self, value: bool) -> None:
        self.model.value_trunk_gradient = bool(value)

    def _autocast(self):
        if self.bf16_autocast and bf16_autocast_applies(self.device):
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _mask(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float().masked_fill(self.invalid_ids_mask, float("-inf"))

    def prompt_lengths(self, prompt_ids: torch.Tensor) -> torch.Tensor:
        """Lengths of right-padded prompts (pad never occurs inside a prompt)."""
        return (prompt_ids != self.tokenizer.pad_id).sum(-1)

    # ------------------------------------------------------------------ incremental decoding

    def start(
        self,
        prompt_ids: torch.Tensor,
        prompt_lengths: torch.Tensor | None = None,
        max_new_tokens: int | None = None,
    ) -> tuple[torch.Tensor, DecodingState]:
        """Read a batch of right-padded prompts ``[B, P]``; return next-token logits ``[B, V]`` and the state.

        ``max_new_tokens``: the tokens (steps and fed ones) the cache is allocated for (default: the
        policy's); it grows beyond when needed."""
        prompt_ids = torch.as_tensor(prompt_ids, device=self.device).long()
        if prompt_lengths is None:
            prompt_lengths = self.prompt_lengths(prompt_ids)
        prompt_lengths = torch.as_tensor(prompt_lengths, device=self.device).long()
        with self._autocast():
            logits, values, cache = self.model.start(
                prompt_ids, prompt_lengths, max_new_tokens or self.max_new_tokens
            )
        logits = self._mask(logits)
        return logits, DecodingState(cache, values.float(), logits)

    def step(self, state: DecodingState, tokens: torch.Tensor) -> tuple[torch.Tensor, DecodingState]:
        """Feed one token per row (``[B]``); return the next logits ``[B, V]`` and the updated state."""
        step = compiled_step(self.model) if self.compile_decoding else self.model.step
        with self._autocast():
            logits, values, cache = step(state.cache, tokens.to(self.device))
        logits = self._mask(logits)
        return logits, DecodingState(cache, values.float(), logits)

    def feed(
        self, state: DecodingState, tokens: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, DecodingState]:
        """Append forced tokens: row ``b`` reads ``tokens[b, :lengths[b]]`` (``[B, K]``, ragged; 0 allowed).

        :return: the logits ``[B, V]`` after each row's last token (a row given none keeps its logits and
            value) and the state. ``feed(s, x[:, None], ones)`` equals ``step(s, x)``.
        """
        tokens = torch.as_tensor(tokens, device=self.device)
        lengths = torch.as_tensor(lengths, device=self.device).long()
        if tokens.shape[1] == 0 or tokens.shape[0] == 0:
            return state.logits, state
        with self._autocast():
            logits, values, cache = self.model.feed(state.cache, tokens, lengths)
        given = lengths > 0
        logits = torch.where(given[:, None], self._mask(logits), state.logits)
        values = torch.where(given, values.float(), state.values)
        return logits, DecodingState(cache, values, logits)

    def reorder(self, state: DecodingState, index: torch.Tensor) -> DecodingState:
        """The state of rows ``index`` (``[B']``, repeats allowed), in that order (beam search)."""
        return state.rows(torch.as_tensor(index, device=self.device).long())

    def select(self, state: DecodingState, rows: torch.Tensor) -> DecodingState:
        """The state of the rows ``rows`` only (``[B']``, distinct, increasing): drops finished rows."""
        return state.rows(torch.as_tensor(rows, device=self.device).long())

    # ------------------------------------------------------------------ whole sequences

    def hidden_states(
        self,
        prompt_ids: torch.Tensor,
        tokens: torch.Tensor,
        lengths: torch.Tensor,
        prompt_lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """float ``[B, T, C]``: the trunk's output (after the final layer norm) at each action's state s_t,
        the input of the LM head and of :attr:`value_head`; 0 at or beyond a row's length. Arguments as in
        :meth:`evaluate_sequences`."""
        prompt_ids = torch.as_tensor(prompt_ids, device=self.device).long()
        tokens = torch.as_tensor(tokens, device=self.device).long()
        if prompt_lengths is None:
            prompt_lengths = self.prompt_lengths(prompt_ids)
        t = tokens.shape[1]
        valid = (
            torch.arange(t, device=self.device)[None, :]
            < torch.as_tensor(lengths, device=self.device)[:, None]
        )
        safe_tokens = torch.where(valid, tokens, self.tokenizer.eos_id)
        with self._autocast():  # the last action is never an input that matters (see evaluate_sequences)
            hidden = self.model.hidden_states(
                prompt_ids,
                torch.as_tensor(prompt_lengths, device=self.device),
                safe_tokens[:, : max(t - 1, 0)],
            )
            hidden = self.model.ln_f(hidden[:, :t])
        return hidden.float() * valid[..., None]

    def sequence_logits(
        self,
        prompt_ids: torch.Tensor,
        tokens: torch.Tensor,
        lengths: torch.Tensor,
        prompt_lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-token logits ``[B, T, V]`` (invalid ids ``-inf``) and values ``[B, T]`` at each action's state,
        in one teacher-forced forward pass (arguments as :meth:`evaluate_sequences`)."""
        logits, values, _, _ = self._teacher_forced(prompt_ids, tokens, lengths, prompt_lengths)
        return logits, values

    def _teacher_forced(
        self,
        prompt_ids: torch.Tensor,
        tokens: torch.Tensor,
        lengths: torch.Tensor,
        prompt_lengths: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(masked logits [B, T, V], values [B, T], valid [B, T], safe tokens [B, T])``."""
        prompt_ids = prompt_ids.to(self.device).long()
        tokens = tokens.to(self.device).long()
        if prompt_lengths is None:
            prompt_lengths = self.prompt_lengths(prompt_ids)
        t = tokens.shape[1]
        valid = torch.arange(t, device=self.device)[None, :] < lengths.to(self.device)[:, None]
        safe_tokens = torch.where(valid, tokens, self.tokenizer.eos_id)  # padding must not hit a -inf logit
        # Output t is computed after action t-1, so the last action is never an input that matters: with
        # causal attention, dropping it leaves the first t outputs unchanged and saves one position.
        with self._autocast():
            logits, values = self.model(
                prompt_ids, prompt_lengths.to(self.device), safe_tokens[:, : max(t - 1, 0)]
            )
        return self._mask(logits[:, :t]), values[:, :t].float(), valid, safe_tokens

    def evaluate_sequences(
        self,
        prompt_ids: torch.Tensor,
        tokens: torch.Tensor,
        lengths: torch.Tensor,
        prompt_lengths: torch.Tensor | None = None,
        agent_mask: torch.Tensor | None = None,
    ) -> SequenceScores:
        """Score episodes in one teacher-forced forward pass.

        :param prompt_ids: int ``[B, P]`` right-padded prompts.
        :param tokens: int ``[B, T]`` the tokens after the prompt (eos included where an episode ended with it).
        :param lengths: int ``[B]`` number of tokens of each episode (positions beyond are ignored).
        :param agent_mask: bool ``[B, T]``, True where the token is the agent's action (default: all); the
            others are read as context but scored 0.
        :return: :class:`SequenceScores`, each ``[B, T]``.
        """
        logits, values, valid, safe_tokens = self._teacher_forced(prompt_ids, tokens, lengths, prompt_lengths)
        if agent_mask is not None:  # the partner's tokens were read above; they are not scored
            valid = valid & torch.as_tensor(agent_mask, device=self.device).bool()
        return score_actions(logits, safe_tokens, values, valid, self.invalid_ids_mask)

    def log_likelihood(
        self,
        prompt_ids: torch.Tensor,
        tokens: torch.Tensor,
        lengths: torch.Tensor,
        prompt_lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """float ``[B, T]``: log p(tokens[b, t] | prompt, tokens[b, :t]) under the language model's own
        softmax over all its logits (invalid ids included, unlike :meth:`evaluate_sequences`): the
        maximum-likelihood objective of pretraining. 0 at or beyond a row's length.

        Every token is an input here, padding too (harmless: causal attention keeps it out of the positions
        that are scored), so the loss is computed exactly as round 1's pretraining computed it.
        """
        prompt_ids = prompt_ids.to(self.device).long()
        tokens = tokens.to(self.device).long()
        if prompt_lengths is None:
            prompt_lengths = self.prompt_lengths(prompt_ids)
        with self._autocast():
            logits, _ = self.model(prompt_ids, torch.as_tensor(prompt_lengths, device=self.device), tokens)
        logits = logits[:, : tokens.shape[1]]
        mask = torch.arange(tokens.shape[1], device=self.device)[None, :] < lengths.to(self.device)[:, None]
        nll = F.cross_entropy(logits.float().transpose(1, 2), tokens, reduction="none")
        return -(nll * mask)

    def frozen_copy(self) -> TransformerPolicy:
        """A frozen copy (eval mode, no gradients): the KL reference of the algorithms."""
        return copy.deepcopy(self).eval().requires_grad_(False)

    def forward(self, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-token logits ``[B, V]`` and values ``[B]`` from observations, recomputing the whole prefix.

        ``obs``: ``{"prompt_ids": [B, P], "prefix_ids": [B, T]}`` (ints, or floats holding ids as SB3 passes).
        """
        prompt_ids = torch.as_tensor(obs["prompt_ids"], device=self.device).long()
        prefix = torch.as_tensor(obs["prefix_ids"], device=self.device).long()
        prefix_lengths = (prefix != self.tokenizer.pad_id).sum(-1)
        with self._autocast():
            logits, values = self.model(prompt_ids, self.prompt_lengths(prompt_ids), prefix)
        rows = torch.arange(prefix.shape[0], device=self.device)
        return self._mask(logits[rows, prefix_lengths]), values[rows, prefix_lengths].float()

    # ------------------------------------------------------------------ checkpoints

    def save(self, path: str | os.PathLike) -> None:
        """Write config, tokenizer, lengths and weights to ``path`` atomically (never a half-written file)."""
        path = Path(path)
        payload = {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.to_dict(),
            "tokenizer": self.tokenizer.to_dict(),
            "max_prompt_tokens": self.max_prompt_tokens,
            "max_new_tokens": self.max_new_tokens,
            "bf16_autocast": self.bf16_autocast,
            "compile": self.compile_decoding,
            "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
        }
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)

    @classmethod
    def load(
        cls, path: str | os.PathLike, env: Any = None, device: str | torch.device = "auto"
    ) -> TransformerPolicy:
        """Load a checkpoint written by :meth:`save`; with ``env``, check that it matches the env.

        :raises ValueError: a missing, corrupt or truncated file, a file of another kind, or an env whose
            tokenizer or lengths differ from the policy's.
        """
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"no policy checkpoint at {path}")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many types for damaged zip / pickle data
            raise ValueError(
                f"{path} is not a readable policy checkpoint (corrupt or truncated?): {err}"
            ) from err
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a TransformerPolicy checkpoint (format {CHECKPOINT_FORMAT!r})")
        try:
            config = TransformerConfig(**payload["config"])
            tokenizer = Tokenizer.from_dict(payload["tokenizer"])
            policy = cls(
                config,
                tokenizer,
                payload["max_prompt_tokens"],
                payload["max_new_tokens"],
                device="cpu",
                bf16_autocast=payload.get("bf16_autocast", False),
                compile=payload.get("compile", False),
            )
            policy.model.load_state_dict(payload["state_dict"])
        except (KeyError, TypeError, RuntimeError) as err:
            raise ValueError(f"{path} holds an inconsistent policy checkpoint: {err}") from err
        policy.to(resolve_device(device))
        if env is not None:
            policy.check_env(env)
        return policy
