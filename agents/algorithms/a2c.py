"""Advantage actor-critic (Mnih et al. 2016), synchronous: one update per rollout."""

from __future__ import annotations

from typing import Any

from agents.algorithms.advantages import explained_variance, generalized_advantages, masked_mean
from agents.algorithms.base import TextRLAlgorithm
from agents.rollout import Trajectories


class A2C(TextRLAlgorithm):
    """``loss = -E[log pi(a_t|s_t) A_t] + vf_coef E[(V(s_t) - R_t)^2] - ent_coef H``, one step per rollout.

    Advantages are GAE(``gae_lambda``) on the critic's values. The default 0.95 bootstraps from the critic;
    lambda = 1 gives Monte-Carlo returns minus V, i.e. REINFORCE with a value baseline.
    Other parameters: :class:`TextRLAlgorithm`.
    """

    _hyperparameters = ("gae_lambda",)

    def __init__(
        self, policy: Any, env: Any, gae_lambda: float = 0.95, learning_rate: float = 3e-4, **kwargs: Any
    ) -> None:
        if not 0 <= gae_lambda <= 1:
            raise ValueError(f"gae_lambda must be in [0, 1], got {gae_lambda}")
        super().__init__(policy, env, learning_rate=learning_rate, **kwargs)
        self.gae_lambda = gae_lambda

    def train(self, traj: Trajectories) -> dict[str, float]:
        batch = traj.unpack()
        rewards, kl = self.penalised_rewards(batch)
        mask = batch.mask.float()
        advantages, returns = generalized_advantages(rewards, batch.values, mask, self.gamma, self.gae_lambda)

        self.policy.eval()  # scored as the rollout sampled: dropout off in both (see PPO.train)
        scores = self.evaluate_rollout(batch)
        policy_loss = -masked_mean(scores.log_probs * advantages, mask)
        value_loss = masked_mean((scores.values - returns) ** 2, mask)
        entropy = masked_mean(scores.entropy, mask)
        loss = policy_loss + self.vf_coef * value_loss - self._entropy_bonus(entropy)
        grad_norm = self._gradient_step(loss, policy_loss=policy_loss, value_loss=value_loss, loss=loss)
        self.kl.update(float(kl.sum(1).mean()))
        return {
            "policy_loss": policy_loss.item(),
            "value_loss": value_loss.item(),
            "entropy": entropy.item(),
            "kl": float(kl.sum(1).mean()),
            "explained_variance": explained_variance(batch.values, returns, batch.mask),
            "grad_norm": float(grad_norm),
        }
