"""Returns and advantages of padded episodes, as batched tensor operations (no loop over time).

Also the groups that group baselines need (leave-one-out REINFORCE, RLOO, GRPO): ``num_generations``
samples of each prompt, played side by side in one rollout, so that a group is ``num_generations``
consecutive episodes.
"""

from __future__ import annotations

import numpy as np
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


# ------------------------------------------------------------------ groups of samples of one prompt


def check_num_generations(num_generations: int, n_envs: int, name: str = "num_generations") -> None:
    """Raise ValueError unless ``num_generations`` is an integer >= 2 dividing ``n_envs``, saying which
    values would do: each rollout must hold whole groups, and a group baseline needs another sample."""
    if isinstance(num_generations, bool) or not isinstance(num_generations, int) or num_generations < 2:
        raise ValueError(
            f"{name} must be an integer >= 2 (each sample is compared with the other samples of its "
            f"prompt), got {num_generations!r}"
        )
    if n_envs % num_generations:
        divisors = [k for k in range(2, n_envs + 1) if n_envs % k == 0]
        raise ValueError(
            f"{name} ({num_generations}) must divide n_envs ({n_envs}) so that each rollout holds whole "
            f"groups of samples of a prompt: with n_envs={n_envs}, {name} may be one of {divisors}; or make "
            f"n_envs a multiple of {num_generations}"
        )


def grouped_prompt_index(
    rng: np.random.Generator, num_examples: int, n_envs: int, num_generations: int
) -> np.ndarray:
    """``[n_envs]`` split rows for a rollout's reset (``options={"index": ...}``): ``n_envs //
    num_generations`` prompts drawn uniformly with replacement, each repeated ``num_generations`` times
    in consecutive envs."""
    prompts = rng.integers(num_examples, size=n_envs // num_generations)
    return np.repeat(prompts, num_generations)


def leave_one_out_baseline(returns: torch.Tensor, num_generations: int) -> torch.Tensor:
    """``b_i = mean_{j != i} R_j`` over the other samples of i's group (Kool et al. 2019).

    :param returns: ``[N]`` one return per episode, group after group (N a multiple of ``num_generations``).
    :return: ``[N]``.
    """
    grouped = returns.view(-1, num_generations)
    return ((grouped.sum(1, keepdim=True) - grouped) / (num_generations - 1)).reshape(-1)


SCALE_REWARDS = ("group", "batch", "none")


def group_relative_advantages(
    rewards: torch.Tensor, num_generations: int, scale_rewards: str
) -> torch.Tensor:
    """GRPO's advantages (Shao et al. 2024): ``A_i = R_i - mean_group(R)``, divided by ``std + 1e-4``.

    The std (unbiased, as ``torch.std``) is the group's with ``scale_rewards="group"``, the whole
    rollout's with ``"batch"``; ``"none"`` does not divide (Dr. GRPO, Liu et al. 2025). TRL 1.x's
    ``scale_rewards`` values and epsilon.

    :param rewards: ``[N]`` one reward per episode, group after group (N a multiple of ``num_generations``).
    :return: ``[N]``.
    """
    if scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"unknown scale_rewards {scale_rewards!r}; valid: {list(SCALE_REWARDS)}")
    grouped = rewards.view(-1, num_generations)
    centred = (grouped - grouped.mean(1, keepdim=True)).reshape(-1)
    if scale_rewards == "none":
        return centred
    if scale_rewards == "group":
        std = grouped.std(1).repeat_interleave(num_generations)
    else:
        std = rewards.std()
    return centred / (std + 1e-4)
