"""Proximal policy optimisation (Schulman et al. 2017) over whole episodes."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from agents.algorithms.advantages import explained_variance, generalized_advantages, masked_mean
from agents.algorithms.base import TextRLAlgorithm
from agents.policies.base import SequenceScores
from agents.rollout import PaddedTrajectories, Trajectories


class PPO(TextRLAlgorithm):
    """Clipped surrogate objective, GAE, several epochs of minibatches of episodes.

    Each minibatch is scored by teacher-forced forward passes over its episodes (one, or up to three over
    groups of similar length where that saves padding: :meth:`TextRLAlgorithm.evaluate_episodes`).

    :param n_epochs: passes over each rollout.
    :param batch_size: episodes per minibatch.
    :param clip_range: epsilon of the ratio clipping.
    :param gae_lambda: GAE lambda.
    :param normalize_advantage: standardise advantages per minibatch.
    :param target_kl: stop the epochs early, before the minibatch whose approximate KL(old || new) exceeds
        ``1.5 * target_kl`` takes its step, as Stable-Baselines3 does (None: never).
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
        batch = traj.unpack()
        rewards, kl = self.penalised_rewards(batch)
        mask_all = batch.mask.float()
        advantages_all, returns_all = generalized_advantages(
            rewards, batch.values, mask_all, self.gamma, self.gae_lambda
        )
        prompt_lengths = self.policy.prompt_lengths(batch.prompts)
        context = self._update_context(batch, prompt_lengths)
        n = batch.lengths.shape[0]
        # Scored as the rollout sampled (eval mode): with dropout on in the update, the ratio would be off 1
        # before any step, and clipping would act on dropout noise.
        self.policy.eval()
        logged: list[torch.Tensor] = []
        optimizer_steps = 0
        stopped = False
        for _ in range(self.n_epochs):
            order = torch.randperm(n, generator=self.generator, device=self.device)
            # The episodes' lengths in this epoch's order, read in one host sync per epoch: they decide how
            # each minibatch is scored without padding columns (see evaluate_episodes).
            lengths = batch.lengths[order].cpu().numpy()
            for start in range(0, n, self.batch_size):
                stop = start + self.batch_size
                scores, rows = self._score_minibatch(
                    batch, order[start:stop], lengths[start:stop], prompt_lengths, context
                )
                width = scores.log_probs.shape[1]
                mask = mask_all[rows, :width]
                advantages, returns = advantages_all[rows, :width], returns_all[rows, :width]
                if self.normalize_advantage:
                    mean = masked_mean(advantages, mask)
                    std = masked_mean((advantages - mean) ** 2, mask).sqrt()
                    # Only with more than one step (a lone step has no spread); chosen on device, no host read.
                    normalized = (advantages - mean) / (std + 1e-8) * mask
                    advantages = torch.where(mask.sum() > 1, normalized, advantages)

                log_ratio = (scores.log_probs - batch.log_probs[rows, :width]) * mask
                ratio = log_ratio.exp()
                surrogate = torch.minimum(
                    ratio * advantages, ratio.clamp(1 - self.clip_range, 1 + self.clip_range) * advantages
                )
                policy_loss = -masked_mean(surrogate, mask)
                value_loss = masked_mean((scores.values - returns) ** 2, mask)
                entropy = masked_mean(scores.entropy, mask)
                loss = policy_loss + self.vf_coef * value_loss - self._entropy_bonus(entropy)

                with torch.no_grad():
                    approx_kl = masked_mean(ratio - 1 - log_ratio, mask)  # Schulman's k3 estimator
                    clip_fraction = masked_mean(((ratio - 1).abs() > self.clip_range).float(), mask)
                    # Kept on device and read once after the epochs (a read per value would be 5 syncs here).
                    logged.append(
                        torch.stack([policy_loss, value_loss, entropy, clip_fraction, approx_kl]).detach()
                    )
                # Checked before stepping, as Stable-Baselines3 does: the minibatch that finds the policy
                # too far from the rollout's is not applied.
                if self.target_kl is not None and float(approx_kl) > 1.5 * self.target_kl:
                    stopped = True
                    break
                self._gradient_step(loss, policy_loss=policy_loss, value_loss=value_loss, loss=loss)
                optimizer_steps += 1
            if stopped:
                break
        episode_kl = float(kl.sum(1).mean())
        self.kl.update(episode_kl)
        means = torch.stack(logged).double().mean(0).tolist()
        stats = dict(
            zip(("policy_loss", "value_loss", "entropy", "clip_fraction", "approx_kl"), means, strict=True)
        )
        stats["kl"] = episode_kl
        stats["explained_variance"] = explained_variance(batch.values, returns_all, batch.mask)
        stats["early_stopped"] = float(stopped)
        stats["optimizer_steps"] = float(optimizer_steps)
        stats.update(self._context_stats(context))
        return stats

    # Hooks of a PPO variant that scores actions differently (NLPO: under a mask): what the whole update
    # needs once, how a minibatch is scored with it, and what it adds to the logged statistics.

    def _update_context(self, batch: PaddedTrajectories, prompt_lengths: torch.Tensor) -> Any:
        return None

    def _score_minibatch(
        self,
        batch: PaddedTrajectories,
        rows: torch.Tensor,
        lengths: np.ndarray,
        prompt_lengths: torch.Tensor,
        context: Any,
    ) -> tuple[SequenceScores, torch.Tensor]:
        """``(scores [B, W], rows)`` of the episodes ``rows`` (possibly reordered; ``lengths`` on the host)."""
        return self.evaluate_episodes(batch, rows, lengths, prompt_lengths)

    def _context_stats(self, context: Any) -> dict[str, float]:
        return {}
