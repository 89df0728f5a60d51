"""Language-model rewards: the log-probability of the generated text under a reference language model
(an n-gram model of the task, or any causal LM a user passes in)."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from lmrl_gym.rewards.base import Reward, RewardBatch, RewardContext
from lmrl_gym.rewards.hf_models import (
    is_name_or_path,
    is_transformers_model,
    load_model,
    load_tokenizer,
    max_positions,
    model_device,
    pad_right,
    same_vocabulary,
    wrapped_transformers_tokenizer,
)
from lmrl_gym.rewards.ngram import KneserNeyLM


def latest_token_and_context(batch: RewardBatch, context_size: int, bos_id: int, eos_id: int):
    """The token each episode just took and the ``context_size`` tokens before it (bos-padded).

    :return: ``(context [B, context_size], token [B], valid [B])``; ``valid`` is False for an episode
        that has taken no token yet (nothing to score).
    """
    generated, lengths, eos = batch.generated, batch.lengths, batch.ended_with_eos
    bsz = generated.shape[0]
    bos = torch.full((bsz, context_size), bos_id, dtype=generated.dtype, device=generated.device)
    # One extra column so the eos "position" just past the last generated token can be indexed.
    pad = torch.full((bsz, 1), eos_id, dtype=generated.dtype, device=generated.device)
    seq = torch.cat([bos, generated, pad], dim=1)
    # Position of the latest token in seq: the last generated token, or one past it when it is eos.
    position = context_size + lengths - 1 + eos.long()
    valid = (lengths > 0) | eos
    position = position.clamp(min=context_size)
    offsets = torch.arange(-context_size, 0, device=generated.device)
    context = seq.gather(1, position[:, None] + offsets[None, :]) if context_size else seq[:, :0]
    token = torch.where(eos, torch.full_like(lengths, eos_id), seq.gather(1, position[:, None])[:, 0])
    return context, token, valid


class LMScoreReward(Reward):
    """Per-token log-probability (natural log, <= 0) under an interpolated Kneser-Ney n-gram model.

    The model is built from the task's training references when the environment is made (no torch, no
    downloads), conditions on the generated tokens only (not the prompt), and scores eos as the final
    token, so an episode's rewards sum to the log-probability of the whole text.

    :param order: the n-gram order.
    :param model: an already fitted :class:`KneserNeyLM` to use instead of fitting one.
    """

    name = "lm"
    per_token = True

    def __init__(self, order: int = 3, model: KneserNeyLM | None = None) -> None:
        if order < 1:
            raise ValueError(f"LM order must be >= 1, got {order}")
        self.order = model.order if model is not None else order
        self.model = model
        self.bos_id: int | None = None
        self.eos_id: int | None = None

    def bind(self, context: RewardContext) -> LMScoreReward:
        tok = context.tokenizer
        model = self.model
        if model is None:
            train = context.task.examples("train")
            sequences = [tok.encode(ref) for ex in train for ref in ex.references]
            model = KneserNeyLM(order=self.order).fit(sequences, tok.vocab_size, tok.bos_id, tok.eos_id)
        bound = LMScoreReward(model=model)
        bound.bos_id, bound.eos_id = tok.bos_id, tok.eos_id
        return bound

    def __call__(self, batch: RewardBatch) -> np.ndarray:
        if self.model is None or self.bos_id is None:
            raise RuntimeError("LMScoreReward must be bound to an environment (Reward.bind) before use")
        context, token, valid = latest_token_and_context(batch, self.order - 1, self.bos_id, self.eos_id)
        logp = self.model.logprob(context.cpu().numpy(), token.cpu().numpy())
        return np.where(valid.cpu().numpy(), logp, 0.0)


class CausalLMScoreReward(Reward):
    """Log-probability (natural log, <= 0) of the generated text under a causal language model.

    The text is conditioned on the model's start token only (not the prompt), and eos is scored as the final
    token when the episode ended with it, so an episode's rewards sum to ``log p(text, eos)``. Two ways to
    score, chosen when the reward is bound to an environment:

    - **per token** (a token reward, paid every step): the model reads the environment's own ids. Always
      for an ``ids -> logits`` callable; for a ``transformers`` model when the environment's tokenizer is
      the model's (the same vocabulary).
    - **per sequence** (a sequence reward, paid at the end, or per step with the environment's
      ``shaping=True``): a ``transformers`` model on an environment with another tokenizer (a word
      tokenizer, another model's BPE). The decoded text (special tokens skipped) is re-encoded with the
      model's tokenizer and scored as a whole; ``per_token`` of the bound reward is then False.

    :param model: one of

        - ``model(ids) -> logits``: ids int64 ``[B, t]`` in the environment's vocabulary, starting with its
          bos; logits ``[B, t, V]`` (the distribution of the next token at each position), e.g. a
          ``torch.nn.Module``. Called on the environment's device, on the whole batch;
        - a ``transformers`` causal LM (``AutoModelForCausalLM``): a hub name or a local folder (loaded with
          ``from_pretrained``; a checkpoint of another kind is refused) or a model object. Its start token is
          its tokenizer's bos, or eos where there is no bos (GPT-2 separates documents with eos).
    :param name: the component name in ``info["reward_components"]``.
    :param tokenizer: a ``transformers`` model's tokenizer (object, name or path); by default loaded from
        the model's own path (``model``, or ``model.name_or_path`` for an object).
    :param batch_size: rows per forward pass of a ``transformers`` model (bounds memory; results do not
        depend on it).
    :param device: where a ``transformers`` model runs; default: the environment's device.
    """

    per_token = True

    def __init__(
        self,
        model: Callable[[torch.Tensor], torch.Tensor] | str | os.PathLike,
        name: str = "lm",
        tokenizer: Any = None,
        batch_size: int = 64,
        device: str | torch.device | None = None,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        what = "a causal language model (AutoModelForCausalLM)"
        self.is_transformers = is_name_or_path(model) or is_transformers_model(model)
        if is_name_or_path(model):
            self.model = load_model(model, "AutoModelForCausalLM", ("ForCausalLM", "LMHeadModel"), what)
        elif self.is_transformers:
            self.model = model.eval()
        elif callable(model):
            self.model = model
        else:
            raise TypeError(
                f"model must be callable (ids -> logits), a transformers causal LM, a hub name or a local "
                f"folder, got {type(model).__name__}"
            )
        if tokenizer is not None and not self.is_transformers:
            raise ValueError(
                "tokenizer= is for a transformers model; an ids -> logits callable reads the env's ids"
            )
        self.lm_tokenizer = (
            load_tokenizer(tokenizer, self.model, model, what) if self.is_transformers else None
        )
        self.name = name
        self.batch_size = batch_size
        self.device = torch.device(device) if device is not None else None
        if self.device is not None and self.is_transformers:
            self.model.to(self.device)
        # Set by bind: "ids" (per token, the env's ids) or "text" (per sequence, re-encoded).
        self.mode: str | None = None
        self.bos_id: int | None = None
        self.eos_id: int | None = None

    def bind(self, context: RewardContext) -> CausalLMScoreReward:
        """Choose per-token or per-sequence scoring for the environment's tokenizer; move a ``transformers``
        model to the environment's device (unless ``device=`` chose one). The model is shared, not copied."""
        bound = copy.copy(self)
        env_tokenizer = context.tokenizer
        if not self.is_transformers:
            bound.mode, bound.bos_id, bound.eos_id = "ids", env_tokenizer.bos_id, env_tokenizer.eos_id
            return bound
        bound.model.to(self.device if self.device is not None else context.device).eval()
        lm_tokenizer = self.lm_tokenizer
        start = (
            lm_tokenizer.bos_token_id if lm_tokenizer.bos_token_id is not None else lm_tokenizer.eos_token_id
        )
        if start is None:
            raise ValueError(
                f"reward {self.name!r}: the language model's tokenizer has neither bos nor eos, so there is no "
                "token to start a text with"
            )
        bound.bos_id = start
        env_transformers_tokenizer = wrapped_transformers_tokenizer(env_tokenizer)
        if env_transformers_tokenizer is not None and same_vocabulary(
            env_transformers_tokenizer, lm_tokenizer
        ):
            bound.mode, bound.eos_id = "ids", env_tokenizer.eos_id
            return bound
        if lm_tokenizer.eos_token_id is None:
            raise ValueError(
                f"reward {self.name!r}: the language model's tokenizer has no eos token, so the end of a "
                "re-encoded text cannot be scored"
            )
        bound.mode, bound.eos_id, bound.per_token = "text", lm_tokenizer.eos_token_id, False
        return bound

    def __call__(self, batch: RewardBatch) -> torch.Tensor:
        if self.mode is None:
            raise RuntimeError("CausalLMScoreReward must be bound to an environment before use")
        if self.mode == "text":
            return self.score_texts(batch.texts, batch.ended_with_eos.cpu().tolist())
        return self.score_latest_tokens(batch)

    @torch.no_grad()
    def score_latest_tokens(self, batch: RewardBatch) -> torch.Tensor:
        """Log-probability of each episode's latest token (eos when it ended with eos), float64 ``[B]``;
        0 for an episode that has taken no token yet."""
        generated, lengths, eos = batch.generated, batch.lengths, batch.ended_with_eos
        if self.is_transformers:
            device = model_device(self.model)
            generated, lengths, eos = generated.to(device), lengths.to(device), eos.to(device)
            # Only columns up to the longest episode are read; the env's pad id may lie outside the
            # model's vocabulary (its own pad for a tokenizer without one), so later columns get a real id.
            width = int(lengths.max()) if lengths.numel() else 0
            generated = generated[:, :width].long()
            beyond = torch.arange(width, device=device)[None, :] >= lengths[:, None]
            generated = generated.masked_fill(beyond, self.bos_id)
        bos = torch.full((generated.shape[0], 1), self.bos_id, dtype=torch.long, device=generated.device)
        ids = torch.cat([bos, generated.long()], dim=1)
        logits = self.logits(ids)
        if logits.ndim != 3 or logits.shape[:2] != ids.shape:
            raise ValueError(
                f"causal LM for reward {self.name!r} returned logits of shape {tuple(logits.shape)}; "
                f"expected [B, t, V] with B, t = {tuple(ids.shape)}"
            )
        logp = torch.log_softmax(logits.double(), dim=-1)
        # The latest token sits at ids position `lengths` (eos: one past); it is predicted one step earlier.
        predict_at = (lengths - 1 + eos.long()).clamp(min=0)
        token = torch.where(
            eos,
            torch.full_like(lengths, self.eos_id),
            ids.gather(1, (predict_at + 1).clamp(max=ids.shape[1] - 1)[:, None])[:, 0],
        )
        scores = logp[torch.arange(ids.shape[0], device=ids.device), predict_at, token]
        valid = (lengths > 0) | eos
        return torch.where(valid, scores, torch.zeros_like(scores))

    @torch.no_grad()
    def score_texts(self, texts: Sequence[str], ended_with_eos: Sequence[bool]) -> torch.Tensor:
        """``log p(text)`` (plus ``log p(eos | text)`` where ended) under the model's own tokenizer,
        float64 ``[len(texts)]``."""
        encoded = self.lm_tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []
        rows = [
            [self.bos_id, *row, *([self.eos_id] if ended else [])]
            for row, ended in zip(encoded, ended_with_eos, strict=True)
        ]
        scores = torch.zeros(len(rows), dtype=torch.float64)
        device = model_device(self.model)
        # Similar lengths share a forward pass, so little of each batch is padding.
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            ids, mask = pad_right([rows[i] for i in chunk], self.bos_id, device)
            logp = torch.log_softmax(self.logits(ids, mask).double(), dim=-1)
            # Position i predicts token i + 1; padding positions (mask 0) add nothing.
            token_logp = logp[:, :-1].gather(-1, ids[:, 1:, None])[..., 0] * mask[:, 1:]
            scores[chunk] = token_logp.sum(dim=1).cpu()
        return scores

    def logits(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits ``[B, t, V]`` of ids ``[B, t]``: the callable as is, a ``transformers`` model in
        chunks of ``batch_size`` rows within its position limit."""
        if not self.is_transformers:
            return self.model(ids)
        limit = max_positions(self.model, self.lm_tokenizer)
        if limit is not None and ids.shape[1] > limit:
            raise ValueError(
                f"reward {self.name!r}: a text of {ids.shape[1]} tokens (start token included) is longer than "
                f"the language model's {limit} positions; lower max_new_tokens"
            )
        if mask is None:
            mask = torch.ones_like(ids)
        parts = [
            self.model(
                input_ids=ids[i : i + self.batch_size], attention_mask=mask[i : i + self.batch_size]
            ).logits
            for i in range(0, ids.shape[0], self.batch_size)
        ]
        return torch.cat(parts, dim=0)
