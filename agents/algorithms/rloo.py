"""REINFORCE leave-one-out (RLOO, Ahmadian et al. 2024), as TRL 1.x's ``RLOOTrainer`` defines it."""

from __future__ import annotations

from typing import Any

import torch

from agents.algorithms.advantages import leave_one_out_baseline, masked_mean
from agents.algorithms.grpo import GroupSampledAlgorithm, clipped_surrogate
from agents.rollout import Trajectories

LOSS_NORMALIZERS = ("sequences", "tokens")


class RLOO(GroupSampledAlgorithm):
    """RLOO: the whole completion is one action, baselined by the other samples of its prompt.

    Each update, for the rollout's groups of ``num_generations`` samples of a prompt:

    - the sequence reward is the episode's total reward minus ``kl_coef`` times its summed per-token
      ``log pi_old - log pi_ref`` (the k1 estimator, on the reward, as TRL's RLOO applies its ``beta``);
    - ``A_i = R_i - mean_{j != i} R_j`` (Kool et al. 2019), optionally standardised over the rollout
      (``normalize_advantages``: ``(A - mean) / (std + 1e-4)``);
    - with the sequence ratio ``r_i = pi(y_i|x) / pi_old(y_i|x)`` (the product over its tokens),
      ``loss = sum_i -min(r_i A_i, clip(r_i, 1 - epsilon, 1 + epsilon_high) A_i)`` over the minibatch's
      sequences, divided as ``loss_normalizer`` says (TRL: by the number of sequences), minus ``ent_coef``
      times the mean entropy per token (not in TRL; 0 by default).

    With ``num_iterations=1`` and one minibatch the ratio is 1 (as in TRL, pi_old is then the update's own
    pass, detached), and the gradient is REINFORCE's with the leave-one-out baseline,
    ``-sum_i A_i grad log pi(y_i|x)`` over the normaliser. With ``loss_normalizer="tokens"`` that is the
    step of ``REINFORCE(baseline="leave_one_out")`` (``gamma=1``, ``kl_coef=0``, the same ``ent_coef`` and
    ``max_grad_norm``), which averages over tokens; with the default ``"sequences"`` it is that gradient
    times tokens / sequences.

    Names are TRL 1.x's ``RLOOConfig``'s, but the KL weight keeps this library's name ``kl_coef`` (TRL's
    ``beta``: the same reward-side penalty as in REINFORCE, A2C and PPO, also with an adaptive
    ``target_kl_penalty``); its default is 0 here (TRL: 0.05), as for every algorithm of this library.

    :param num_generations: samples per prompt in each rollout (>= 2, must divide ``n_envs``; TRL's
        default 2).
    :param normalize_advantages: standardise the advantages over the rollout.
    :param num_iterations: passes over each rollout.
    :param epsilon: the sequence ratio's clip range below 1, in (0, 1).
    :param epsilon_high: the clip range above 1 (None: ``epsilon``).
    :param batch_size: episodes per minibatch (None: the whole rollout, one optimizer step per iteration).
    :param loss_normalizer: what the sum of the minibatch's per-sequence terms is divided by:
        ``"sequences"`` (default, TRL's RLOO: the mean over sequences, each completion weighing the same
        whatever its length) or ``"tokens"`` (the number of completion tokens in the minibatch, REINFORCE's
        token mean: a sequence weighs its length; with the settings above, the same update as
        ``REINFORCE(baseline="leave_one_out")``).
    Other parameters: :class:`~agents.algorithms.base.TextRLAlgorithm` (``vf_coef`` and ``gamma`` unused).
    """

    _hyperparameters = GroupSampledAlgorithm._hyperparameters + ("normalize_advantages", "loss_normalizer")

    def __init__(
        self,
        policy: Any,
        env: Any,
        num_generations: int = 2,
        normalize_advantages: bool = False,
        num_iterations: int = 1,
        epsilon: float = 0.2,
        epsilon_high: float | None = None,
        batch_size: int | None = None,
        loss_normalizer: str = "sequences",
        learning_rate: float = 1e-4,
        **kwargs: Any,
    ) -> None:
        if loss_normalizer not in LOSS_NORMALIZERS:
            raise ValueError(f"unknown loss_normalizer {loss_normalizer!r}; valid: {list(LOSS_NORMALIZERS)}")
        super().__init__(
            policy,
            env,
            num_generations=num_generations,
            num_iterations=num_iterations,
            epsilon=epsilon,
            epsilon_high=epsilon_high,
            batch_size=batch_size,
            learning_rate=learning_rate,
            **kwargs,
        )
        self.normalize_advantages = normalize_advantages
        self.loss_normalizer = loss_normalizer

    def train(self, traj: Trajectories) -> dict[str, float]:
        batch = traj.unpack()
        rewards, kl = self.penalised_rewards(batch)  # per token; summed below: TRL's sequence-level penalty
        mask_all = batch.mask.float()
        returns = rewards.sum(1)  # R_i - kl_coef * sum_t (log pi_old - log pi_ref), [N]
        advantages_all = returns - leave_one_out_baseline(returns, self.num_generations)
        if self.normalize_advantages:
            advantages_all = (advantages_all - advantages_all.mean()) / (advantages_all.std() + 1e-4)
        old_log_probs = (batch.log_probs * mask_all).sum(1)  # log pi_old(y_i|x), [N]
        prompt_lengths = self.policy.prompt_lengths(batch.prompts)
        # Scored as the rollout sampled (eval mode): see PPO.train.
        self.policy.eval()
        logged: list[torch.Tensor] = []
        for _ in range(self.num_iterations):
            minibatches = self.minibatches(batch)
            # One pass of one minibatch: nothing has stepped since the rollout, so pi_old is the policy being
            # scored, and (as TRL does with num_iterations=1) its own pass, detached, stands for it: the
            # ratio is exactly 1 and the gradient exactly the policy gradient, where the rollout's KV-cached
            # log-probs would differ from this full pass by ~1e-6. The clip acts only outside
            # [1 - epsilon, 1 + epsilon_high], never near 1, so only that ~1e-6 changes. After a step (more
            # passes or minibatches) the rollout's log-probs are pi_old, as before.
            on_policy = self.num_iterations == 1 and len(minibatches) == 1
            for chosen, lengths in minibatches:
                scores, rows = self.evaluate_episodes(batch, chosen, lengths, prompt_lengths)
                mask = mask_all[rows, : scores.log_probs.shape[1]]
                advantages = advantages_all[rows]

                sequence_log_probs = (scores.log_probs * mask).sum(1)  # log pi(y_i|x), one per sequence
                old = sequence_log_probs.detach() if on_policy else old_log_probs[rows]
                per_sequence, clipped = clipped_surrogate(
                    (sequence_log_probs - old).exp(), advantages, self.epsilon, self.upper_epsilon
                )
                if self.loss_normalizer == "tokens":
                    policy_loss = per_sequence.sum() / mask.sum().clamp(min=1)
                else:
                    policy_loss = per_sequence.mean()
                entropy = masked_mean(scores.entropy, mask)
                loss = policy_loss - self._entropy_bonus(entropy)

                with torch.no_grad():
                    logged.append(torch.stack([policy_loss, entropy, clipped.float().mean()]).detach())
                self._gradient_step(loss, policy_loss=policy_loss, loss=loss)
        episode_kl = float(kl.sum(1).mean())
        self.kl.update(episode_kl)
        means = torch.stack(logged).double().mean(0).tolist()
        stats = dict(zip(("policy_loss", "entropy", "clip_ratio"), means, strict=True))
        stats["kl"] = episode_kl
        return stats
