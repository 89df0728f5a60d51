"""REINFORCE (Williams 1992) with a choice of baseline."""

from __future__ import annotations

from typing import Any

import torch

from agents.algorithms.advantages import (
    check_num_generations,
    grouped_prompt_index,
    leave_one_out_baseline,
    masked_mean,
    returns_to_go,
)
from agents.algorithms.base import TextRLAlgorithm
from agents.rollout import Trajectories

BASELINES = ("none", "mean", "value", "leave_one_out")


class REINFORCE(TextRLAlgorithm):
    """Monte-Carlo policy gradient: ``grad J = E[sum_t grad log pi(a_t|s_t) (G_t - b_t)]``.

    :param baseline: ``"value"`` (default: the policy's value head, trained alongside); ``"none"``; ``"mean"``
        (a running mean of the returns); ``"leave_one_out"`` (``num_generations`` samples of each prompt,
        each baselined by the mean return of the others: Kool et al. 2019, Ahmadian et al. 2024; see also
        :class:`~agents.algorithms.rloo.RLOO`).
    :param num_generations: samples per prompt for ``leave_one_out`` (>= 2, must divide ``n_envs``; TRL's
        name, as GRPO and RLOO have it). Default 4.
    :param samples_per_prompt: the former name of ``num_generations`` (still read, e.g. from checkpoints
        written before the rename).
    :param baseline_momentum: the running mean's update rate for ``"mean"``.
    Other parameters: :class:`TextRLAlgorithm`.
    """

    _hyperparameters = ("baseline", "num_generations", "baseline_momentum")
    _state_attributes = ("running_mean",)

    def __init__(
        self,
        policy: Any,
        env: Any,
        baseline: str = "value",
        num_generations: int | None = None,
        baseline_momentum: float = 0.1,
        learning_rate: float = 1e-4,
        samples_per_prompt: int | None = None,
        **kwargs: Any,
    ) -> None:
        if baseline not in BASELINES:
            raise ValueError(f"unknown baseline {baseline!r}; valid: {list(BASELINES)}")
        if samples_per_prompt is not None:
            if num_generations is not None and num_generations != samples_per_prompt:
                raise ValueError(
                    f"num_generations={num_generations} and samples_per_prompt={samples_per_prompt} name the "
                    "same setting (samples_per_prompt is its former name): give only num_generations"
                )
            num_generations = samples_per_prompt
        num_generations = 4 if num_generations is None else num_generations
        super().__init__(policy, env, learning_rate=learning_rate, **kwargs)
        if baseline == "leave_one_out":
            check_num_generations(num_generations, self.n_envs)
        self.baseline = baseline
        self.num_generations = num_generations
        self.baseline_momentum = baseline_momentum
        self.running_mean = 0.0

    @property
    def samples_per_prompt(self) -> int:
        """The former name of :attr:`num_generations`."""
        return self.num_generations

    @samples_per_prompt.setter
    def samples_per_prompt(self, value: int) -> None:
        self.num_generations = value

    def reset_options(self) -> dict | None:
        if self.baseline != "leave_one_out":
            return None
        return {
            "index": grouped_prompt_index(self.rng, self.env.num_examples, self.n_envs, self.num_generations)
        }

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
            others = leave_one_out_baseline(returns[:, 0], self.num_generations)
            baseline = (returns - returns[:, :1] + others[:, None]) * mask  # b_t = G_t - (G_0 - b)
        advantages = (returns - baseline) * mask

        self.policy.eval()  # scored as the rollout sampled: dropout off in both (see PPO.train)
        scores = self.evaluate_rollout(batch)
        policy_loss = -masked_mean(scores.log_probs * advantages.detach(), mask)
        value_loss = masked_mean((scores.values - returns) ** 2, mask)
        entropy = masked_mean(scores.entropy, mask)
        loss = policy_loss - self._entropy_bonus(entropy)
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
