"""Token rewards: the log-probability of each generated token under a reference language model."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from lmrl_gym.rewards.base import Reward, RewardBatch, RewardContext
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
    """Per-token log-probability under any causal language model a user passes in.

    :param model: ``model(ids) -> logits``, ids int64 ``[B, t]`` starting with bos, logits ``[B, t, V]``
        (the distribution of the next token at each position), e.g. a ``torch.nn.Module``.
    :param name: the component name in ``info["reward_components"]``.
    """

    per_token = True

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor], name: str = "lm") -> None:
        if not callable(model):
            raise TypeError(f"model must be callable (ids -> logits), got {type(model).__name__}")
        self.model = model
        self.name = name
        self.bos_id: int | None = None
        self.eos_id: int | None = None

    def bind(self, context: RewardContext) -> CausalLMScoreReward:
        bound = CausalLMScoreReward(self.model, self.name)
        bound.bos_id, bound.eos_id = context.tokenizer.bos_id, context.tokenizer.eos_id
        return bound

    @torch.no_grad()
    def __call__(self, batch: RewardBatch) -> torch.Tensor:
        if self.bos_id is None:
            raise RuntimeError("CausalLMScoreReward must be bound to an environment before use")
        generated, lengths = batch.generated, batch.lengths
        bos = torch.full((generated.shape[0], 1), self.bos_id, dtype=torch.long, device=generated.device)
        ids = torch.cat([bos, generated.long()], dim=1)
        logits = self.model(ids)
        if logits.ndim != 3 or logits.shape[:2] != ids.shape:
            raise ValueError(
                f"causal LM for reward {self.name!r} returned logits of shape {tuple(logits.shape)}; "
                f"expected [B, t, V] with B, t = {tuple(ids.shape)}"
            )
        logp = torch.log_softmax(logits.double(), dim=-1)
        # The latest token sits at ids position `lengths` (eos: one past); it is predicted one step earlier.
        eos = batch.ended_with_eos
        predict_at = (lengths - 1 + eos.long()).clamp(min=0)
        token = torch.where(
            eos,
            torch.full_like(lengths, self.eos_id),
            ids.gather(1, (predict_at + 1).clamp(max=ids.shape[1] - 1)[:, None])[:, 0],
        )
        scores = logp[torch.arange(ids.shape[0], device=ids.device), predict_at, token]
        valid = (lengths > 0) | eos
        return torch.where(valid, scores, torch.zeros_like(scores))
