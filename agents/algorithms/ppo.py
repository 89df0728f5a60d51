"""Proximal policy optimisation (Schulman et al. 2017) over whole episodes."""

from __future__ import annotations

from typing import Any

import torch

from agents.algorithms.advantages import explained_variance, generalized_advantages, masked_mean
from agents.algorithms.base import TextRLAlgorithm
from agents.rollout import Trajectories


class PPO(TextRLAlgorithm):
    """Clipped surrogate objective, GAE, several epochs of minibatches of episodes.

    Each minibatch is scored by one teacher-forced forward pass over its episodes.

    :param n_epochs: passes over each rollout.
    :param batch_size: episodes per minibatch.
    :param clip_range: epsilon of the ratio clipping.
    :param gae_lambda: GAE lambda.
    :param normalize_advantage: standardise advantages per minibatch.
    :param target_kl: stop the epochs early when the approximate KL(old || new) exceeds it (None: never).
    Other parameters: :class:`TextRLAlgorithm`.
    """

    _hyperparameters = (
        "n_epochs",
        "batch_size",
        "clip_range",
        "gae_lambda",
        "normalize_advantage",
        "target_kl",
    )

    def __init__(
        self,
        policy: Any,
        env: Any,
        n_epochs: int = 4,
        batch_size: int = 16,
        clip_range: float = 0.2,
        gae_lambda: float = 0.95,
        normalize_advantage: bool = True,
        target_kl: float | None = None,
        learning_rate: float = 1e-4,
        **kwargs: Any,
    ) -> None:
        if n_epochs < 1 or batch_size < 1:
            raise ValueError(f"n_epochs and batch_size must be >= 1, got {n_epochs}, {batch_size}")
        if not 0 < clip_range < 1:
            raise ValueError(f"clip_range must be in (0, 1), got {clip_range}")
        super().__init__(policy, env, learning_rate=learning_rate, **kwargs)
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.clip_range = clip_range
        self.gae_lambda = gae_lambda
        self.normalize_advantage = normalize_advantage
        self.target_kl = target_kl

    def train(self, traj: Trajectories) -> dict[str, float]:
        rewards, kl = self.penalised_rewards(traj)
        mask_all = traj.mask.float()
        advantages_all, returns_all = generalized_advantages(
            rewards, traj.values, mask_all, self.gamma, self.gae_lambda
        )
        self.policy.train()
        log: dict[str, list[float]] = {
            k: [] for k in ("policy_loss", "value_loss", "entropy", "clip_fraction", "approx_kl")
        }
        stopped = False
        for _ in range(self.n_epochs):
            order = torch.randperm(len(traj.lengths), generator=self.generator, device=self.device)
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                batch, mask = traj.index(rows), mask_all[rows]
                advantages, returns = advantages_all[rows], returns_all[rows]
                if self.normalize_advantage and mask.sum() > 1:
                    mean = masked_mean(advantages, mask)
                    std = masked_mean((advantages - mean) ** 2, mask).sqrt()
                    advantages = (advantages - mean) / (std + 1e-8) * mask

                scores = self.policy.evaluate_sequences(batch.prompts, batch.tokens, batch.lengths)
                log_ratio = (scores.log_probs - batch.log_probs) * mask
                ratio = log_ratio.exp()
                surrogate = torch.minimum(
                    ratio * advantages, ratio.clamp(1 - self.clip_range, 1 + self.clip_range) * advantages
                )
                policy_loss = -masked_mean(surrogate, mask)
                value_loss = masked_mean((scores.values - returns) ** 2, mask)
                entropy = masked_mean(scores.entropy, mask)
                loss = policy_loss + self.vf_coef * value_loss - self.ent_coef * entropy
                self._check_finite(policy_loss=policy_loss, value_loss=value_loss, loss=loss)
                self._gradient_step(loss)

                with torch.no_grad():
                    approx_kl = masked_mean(ratio - 1 - log_ratio, mask)  # Schulman's k3 estimator
                    clip_fraction = masked_mean(((ratio - 1).abs() > self.clip_range).float(), mask)
                for key, value in (
                    ("policy_loss", policy_loss),
                    ("value_loss", value_loss),
                    ("entropy", entropy),
                    ("clip_fraction", clip_fraction),
                    ("approx_kl", approx_kl),
                ):
                    log[key].append(value.item())
                if self.target_kl is not None and float(approx_kl) > 1.5 * self.target_kl:
                    stopped = True
                    break
            if stopped:
                break
        self.kl.update(float(kl.sum(1).mean()))
        stats = {k: sum(v) / len(v) for k, v in log.items()}
        stats["kl"] = float(kl.sum(1).mean())
        stats["explained_variance"] = explained_variance(traj.values, returns_all, traj.mask)
        stats["early_stopped"] = float(stopped)
        return stats
