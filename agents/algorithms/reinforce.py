"""REINFORCE (Williams 1992) with a choice of baseline."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from agents.algorithms.advantages import masked_mean, returns_to_go
from agents.algorithms.base import TextRLAlgorithm
from agents.rollout import Trajectories

BASELINES = ("none", "mean", "value", "leave_one_out")


class REINFORCE(TextRLAlgorithm):
    """Monte-Carlo policy gradient: ``grad J = E[sum_t grad log pi(a_t|s_t) (G_t - b_t)]``.

    :param baseline: ``"value"`` (default: the policy's value head, trained alongside); ``"none"``; ``"mean"`` (a running mean of the returns); ``"leave_one_out"`` (``samples_per_prompt`` samples of each prompt,
        each baselined by the mean return of the others: Kool et al. 2019, Ahmadian et al. 2024).
    :param samples_per_prompt: samples per prompt for ``leave_one_out`` (must divide ``n_envs``).
    :param baseline_momentum: the running mean's update rate for ``"mean"``.
    Other parameters: :class:`TextRLAlgorithm`.
    """

    _hyperparameters = ("baseline", "samples_per_prompt", "baseline_momentum")
    _state_attributes = ("running_mean",)

    def __init__(
        self,
        policy: Any,
        env: Any,
        baseline: str = "value",
        samples_per_prompt: int = 4,
        baseline_momentum: float = 0.1,
        learning_rate: float = 1e-4,
        **kwargs: Any,
    ) -> None:
        if baseline not in BASELINES:
            raise ValueError(f"unknown baseline {baseline!r}; valid: {list(BASELINES)}")
        super().__init__(policy, env, learning_rate=learning_rate, **kwargs)
        if baseline == "leave_one_out" and (samples_per_prompt < 2 or self.n_envs % samples_per_prompt):
            raise ValueError(
                f"leave_one_out needs samples_per_prompt >= 2 dividing n_envs ({self.n_envs}), got {samples_per_prompt}"
            )
        self.baseline = baseline
        self.samples_per_prompt = samples_per_prompt
        self.baseline_momentum = baseline_momentum
        self.running_mean = 0.0

    def reset_options(self) -> dict | None:
        if self.baseline != "leave_one_out":
            return None
        prompts = self.rng.integers(self.env.num_examples, size=self.n_envs // self.samples_per_prompt)
        return {"index": np.repeat(prompts, self.samples_per_prompt)}

    def train(self, traj: Trajectories) -> dict[str, float]:
        batch = traj.unpack()
        rewards, kl = self.penalised_rewards(batch)
        mask = batch.mask.float()
        returns = returns_to_go(rewards, mask, self.gamma)  # G_t
        if self.baseline == "none":
            baseline = torch.zeros_like(returns)
        elif self.baseline == "mean":
            baseline = torch.full_like(returns, self.running_mean)
            self.running_mean += self.baseline_momentum * (
                float(masked_mean(returns, mask)) - self.running_mean
            )
        elif self.baseline == "value":
            baseline = batch.values
        else:  # leave one out: the other samples of the same prompt, on the whole-episode return
            total = returns[:, 0].view(-1, self.samples_per_prompt)
            others = (total.sum(1, keepdim=True) - total) / (self.samples_per_prompt - 1)
            baseline = (others.reshape(-1, 1) + returns - returns[:, :1]) * mask  # b_t = G_t - (G_0 - b)
        advantages = (returns - baseline) * mask

        self.policy.eval()  # scored as the rollout sampled: dropout off in both (see PPO.train)
        scores = self.evaluate_rollout(batch)
        policy_loss = -masked_mean(scores.log_probs * advantages.detach(), mask)
        value_loss = masked_mean((scores.values - returns) ** 2, mask)
        entropy = masked_mean(scores.entropy, mask)
        loss = policy_loss - self.ent_coef * entropy
        if self.baseline == "value":
            loss = loss + self.vf_coef * value_loss
        grad_norm = self._gradient_step(loss, policy_loss=policy_loss, value_loss=value_loss, loss=loss)
        self.kl.update(float(kl.sum(1).mean()))
        return {
            "policy_loss": policy_loss.item(),
            "value_loss": value_loss.item(),
            "entropy": entropy.item(),
            "kl": float(kl.sum(1).mean()),
            "grad_norm": float(grad_norm),
        }
