"""How an environment pays a (possibly composite) reward: token components every step, sequence
components at the end of the episode (or, with shaping, as per-step differences)."""

from __future__ import annotations

import torch

from lmrl_gym.rewards.base import Reward, RewardBatch, WeightedSumReward, validate_reward_output


class RewardPipeline:
    """Splits a bound reward into weighted token and sequence components and evaluates them in batches.

    :param reward: a bound :class:`Reward` (a :class:`WeightedSumReward` is flattened).
    :param shaping: pay sequence components as per-step differences ``R(prefix_t) - R(prefix_{t-1})``
        with ``R(empty prefix) := 0``, so the episode's total equals the final score.
    """

    def __init__(self, reward: Reward, shaping: bool = False) -> None:
        components = reward.components if isinstance(reward, WeightedSumReward) else [(reward, 1.0)]
        self.token_components = [(r, w) for r, w in components if r.per_token]
        self.sequence_components = [(r, w) for r, w in components if not r.per_token]
        self.names = [r.name for r, _ in components]
        self.shaping = shaping

    @property
    def has_token_rewards(self) -> bool:
        return bool(self.token_components)

    def _evaluate(self, parts, batch: RewardBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        device = batch.generated.device
        total = torch.zeros(len(batch), dtype=torch.float64, device=device)
        values = {}
        for reward, weight in parts:
            value = validate_reward_output(reward.name, reward(batch), len(batch), device)
            values[reward.name] = value
            total = total + weight * value
        return total, values

    def token_rewards(self, batch: RewardBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Weighted sum ``[B]`` and raw values of the token components for each episode's latest token."""
        return self._evaluate(self.token_components, batch)

    def sequence_rewards(self, batch: RewardBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Weighted sum ``[B]`` and raw values of the sequence components on the generated texts."""
        return self._evaluate(self.sequence_components, batch)
