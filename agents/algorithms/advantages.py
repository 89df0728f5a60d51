"""Returns and advantages of padded episodes, as batched tensor operations (no loop over time)."""

from __future__ import annotations

import torch


def discounted_reverse_cumsum(x: torch.Tensor, discount: float) -> torch.Tensor:
    """``y[:, t] = sum_{k >= t} discount**(k - t) * x[:, k]`` for ``x [N, T]``, as one matrix product."""
    t = x.shape[1]
    steps = torch.arange(t, device=x.device)
    power = (steps[:, None] - steps[None, :]).clamp(min=0).to(x.dtype)  # [k, t] -> k - t
    weights = torch.where(
        steps[:, None] >= steps[None, :], discount**power, torch.zeros((), dtype=x.dtype, device=x.device)
    )
    return x @ weights  # y[n, t] = sum_k x[n, k] * weights[k, t]


def returns_to_go(rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """``G_t = sum_{k >= t} gamma**(k-t) r_k`` within each episode (0 beyond its end)."""
    return discounted_reverse_cumsum(rewards * mask, gamma) * mask


def generalized_advantages(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, gae_lambda: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE (Schulman et al. 2016) for episodes that all end (an episode's last state has value 0).

    ``delta_t = r_t + gamma V(s_{t+1}) - V(s_t)``; ``A_t = sum_k (gamma lambda)^k delta_{t+k}``.
    :return: ``(advantages, returns = advantages + values)``, each ``[N, T]``, 0 beyond each episode.
    """
    values = values * mask
    next_values = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1)
    deltas = (rewards + gamma * next_values - values) * mask
    advantages = discounted_reverse_cumsum(deltas, gamma * gae_lambda) * mask
    return advantages, (advantages + values) * mask


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def explained_variance(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """``1 - Var(target - predicted) / Var(target)`` over the valid positions (nan when Var(target) = 0)."""
    y, p = target[mask], predicted[mask]
    var = y.var(unbiased=False)
    return float("nan") if var == 0 else float(1 - (y - p).var(unbiased=False) / var)
