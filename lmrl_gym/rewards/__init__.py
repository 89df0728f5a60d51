"""Rewards for text generation: BLEU, exact match, LM score, learned and user functions, behind one protocol.

``make_reward(spec)`` turns what a user passes as ``reward=`` into a :class:`Reward`:

- a name: ``"bleu"``, ``"exact_match"``, ``"lm"``, ``"learned"`` (with ``reward_model=``, a saved
  :class:`RewardNetwork` or one in memory);
- a :class:`Reward` instance (e.g. a :class:`ClassifierReward` or a :class:`CausalLMScoreReward` on a
  ``transformers`` model);
- a plain Python function on strings (wrapped by :class:`CallableReward`);
- a mapping ``{spec: weight}`` of any of these (a :class:`WeightedSumReward`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from lmrl_gym.rewards.base import (
    CallableReward,
    Reward,
    RewardBatch,
    RewardContext,
    RewardError,
    WeightedSumReward,
    batched,
    validate_reward_output,
)
from lmrl_gym.rewards.bleu import corpus_bleu, sentence_bleu
from lmrl_gym.rewards.classifier import ClassifierReward
from lmrl_gym.rewards.learned import LearnedReward, RewardNetwork, RewardNetworkConfig
from lmrl_gym.rewards.lm_score import CausalLMScoreReward, LMScoreReward
from lmrl_gym.rewards.ngram import KneserNeyLM
from lmrl_gym.rewards.sequence_rewards import BLEUReward, ExactMatchReward

REWARDS: dict[str, Callable[[], Reward]] = {
    "bleu": BLEUReward,
    "exact_match": ExactMatchReward,
    "lm": LMScoreReward,
    "learned": LearnedReward,
}


def list_rewards() -> list[str]:
    """Names accepted by ``make_reward`` and ``gym.make(..., reward=name)``."""
    return sorted(REWARDS)


def make_reward(spec: Any, reward_model: Any = None) -> Reward:
    """Build a :class:`Reward` from a name, a Reward, a callable or a ``{spec: weight}`` mapping.

    :param reward_model: the model of the ``"learned"`` reward (a file path or a :class:`RewardNetwork`);
        an error when ``spec`` has no ``"learned"`` part.
    """
    if reward_model is not None and not _names_learned(spec):
        raise ValueError(
            f"reward_model is only used by reward='learned' (or a mapping with a 'learned' key), got reward={spec!r}"
        )
    if spec == "learned":
        return LearnedReward(reward_model)
    if isinstance(spec, Reward):
        return spec
    if isinstance(spec, str):
        if spec not in REWARDS:
            raise ValueError(
                f"unknown reward {spec!r}; valid rewards: {list_rewards()}, a Reward or a callable"
            )
        return REWARDS[spec]()
    if isinstance(spec, Mapping):
        if not spec:
            raise ValueError("a weighted reward mapping must not be empty")
        components = []
        for key, weight in spec.items():
            if isinstance(weight, bool) or not isinstance(weight, (int, float)):
                raise ValueError(f"weight for reward {key!r} must be a number, got {weight!r}")
            reward = make_reward(key, reward_model if key == "learned" else None)
            if isinstance(reward, WeightedSumReward):
                raise ValueError("weighted sums cannot be nested")
            components.append((reward, float(weight)))
        return WeightedSumReward(components)
    if callable(spec):
        return CallableReward(spec)
    raise ValueError(
        f"cannot make a reward from {type(spec).__name__}; pass one of {list_rewards()}, a Reward, "
        "a callable or a {reward: weight} mapping"
    )


def _names_learned(spec: Any) -> bool:
    if isinstance(spec, str):
        return spec == "learned"
    return isinstance(spec, Mapping) and "learned" in spec


__all__ = [
    "BLEUReward",
    "CallableReward",
    "CausalLMScoreReward",
    "ClassifierReward",
    "ExactMatchReward",
    "KneserNeyLM",
    "LMScoreReward",
    "LearnedReward",
    "REWARDS",
    "Reward",
    "RewardBatch",
    "RewardContext",
    "RewardError",
    "RewardNetwork",
    "RewardNetworkConfig",
    "WeightedSumReward",
    "batched",
    "corpus_bleu",
    "list_rewards",
    "make_reward",
    "sentence_bleu",
    "validate_reward_output",
]
