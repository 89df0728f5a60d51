"""Returns and GAE against a plain reference loop over time (the batched versions must match it)."""

from __future__ import annotations

import pytest
import torch

from agents.algorithms.advantages import discounted_reverse_cumsum, generalized_advantages, returns_to_go


def reference_gae(rewards, values, lengths, gamma, lam):
    n, t = rewards.shape
    advantages = torch.zeros(n, t, dtype=torch.float64)
    for i in range(n):
        running = 0.0
        for k in reversed(range(int(lengths[i]))):
            next_value = values[i, k + 1] if k + 1 < lengths[i] else 0.0
            delta = rewards[i, k] + gamma * next_value - values[i, k]
            running = delta + gamma * lam * running
            advantages[i, k] = running
    return advantages


@pytest.mark.parametrize("gamma", [1.0, 0.9])
@pytest.mark.parametrize("lam", [1.0, 0.95, 0.5, 0.0])
def test_gae_matches_the_recursive_definition(gamma, lam):
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([1, 4, 7, 7, 3])
    mask = (torch.arange(7)[None] < lengths[:, None]).double()
    rewards = torch.randn(5, 7, generator=g, dtype=torch.float64) * mask
    values = torch.randn(5, 7, generator=g, dtype=torch.float64) * mask
    advantages, returns = generalized_advantages(rewards, values, mask, gamma, lam)
    expected = reference_gae(rewards, values, lengths, gamma, lam)
    torch.testing.assert_close(advantages, expected)
    torch.testing.assert_close(returns, (expected + values) * mask)


def test_lambda_changes_the_advantages():
    """Regression: the discount once had its exponent's sign flipped, so gamma and lambda did nothing."""
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.1, 0.2, 0.3]])
    mask = torch.ones(1, 3)
    a1, _ = generalized_advantages(rewards, values, mask, 1.0, 1.0)
    a2, _ = generalized_advantages(rewards, values, mask, 1.0, 0.5)
    assert not torch.allclose(a1, a2)


def test_discounted_returns():
    rewards = torch.tensor([[1.0, 2.0, 3.0]])
    torch.testing.assert_close(
        discounted_reverse_cumsum(rewards, 0.5), torch.tensor([[1 + 1 + 0.75, 2 + 1.5, 3.0]])
    )
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    torch.testing.assert_close(returns_to_go(rewards, mask, 1.0), torch.tensor([[3.0, 2.0, 0.0]]))
