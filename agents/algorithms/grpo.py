"""Group relative policy optimisation (GRPO, Shao et al. 2024), with TRL 1.x's loss types and defaults.

Also the part GRPO shares with RLOO (:mod:`agents.algorithms.rloo`): ``num_generations`` samples of each
prompt in every rollout, and ``num_iterations`` clipped passes over the rollout in minibatches.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from agents.algorithms.advantages import (
    SCALE_REWARDS,
    check_num_generations,
    group_relative_advantages,
    grouped_prompt_index,
    masked_mean,
)
from agents.algorithms.base import TextRLAlgorithm
from agents.rollout import PaddedTrajectories, Trajectories

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")


def k3_kl(log_probs: torch.Tensor, ref_log_probs: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimate of KL(pi || pi_ref) at each sampled token, ``exp(d) - d - 1`` with
    ``d = log pi_ref - log pi`` (nats, >= 0, unbiased on samples of pi): the KL term of TRL's GRPO loss.

    :param log_probs: ``[B, W]`` log pi(a_t|s_t) of the policy being trained (with gradients).
    :param ref_log_probs: ``[B, W]`` the reference's log-probs of the same tokens.
    :return: ``[B, W]``.
    """
    delta = ref_log_probs - log_probs
    return delta.exp() - delta - 1


def aggregate_token_losses(
    losses: torch.Tensor,
    mask: torch.Tensor,
    loss_type: str,
    max_new_tokens: int,
    rollout_tokens: torch.Tensor,
) -> torch.Tensor:
    """One scalar from per-token losses, as TRL 1.x's ``GRPOTrainer`` defines each ``loss_type``.

    - ``"grpo"``: each sequence's token mean, then the mean over the minibatch's sequences (Shao et al.);
    - ``"bnpo"``: the token mean over the minibatch;
    - ``"dr_grpo"``: the token sum over ``sequences x max_new_tokens`` (Dr. GRPO, Liu et al. 2025);
    - ``"dapo"``: the token sum over the tokens of the whole rollout (DAPO, Yu et al. 2025), so that a
      minibatch weighs its share of the rollout's tokens.

    :param losses: ``[B, W]`` per-token losses of a minibatch of B episodes (anything beyond an episode
        is ignored).
    :param mask: ``[B, W]`` 1.0 for each episode's tokens.
    :param max_new_tokens: the env's cap on an episode's tokens (``"dr_grpo"``).
    :param rollout_tokens: a scalar tensor, the number of tokens in the whole rollout (``"dapo"``).
    """
    total = losses * mask
    if loss_type == "grpo":
        return (total.sum(1) / mask.sum(1).clamp(min=1)).mean()
    if loss_type == "bnpo":
        return total.sum() / mask.sum().clamp(min=1)
    if loss_type == "dr_grpo":
        return total.sum() / (losses.shape[0] * max_new_tokens)
    if loss_type == "dapo":
        return total.sum() / rollout_tokens.clamp(min=1)
    raise ValueError(f"unknown loss_type {loss_type!r}; valid: {list(LOSS_TYPES)}")


def clipped_surrogate(
    ratio: torch.Tensor, advantages: torch.Tensor, epsilon: float, epsilon_high: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(-min(r A, clip(r, 1 - epsilon, 1 + epsilon_high) A), clipped)``, elementwise (a token's or a
    sequence's), and where the clip took effect (TRL's ``clip_ratio/region``: r below the range with A < 0,
    or above it with A > 0)."""
    clipped_ratio = ratio.clamp(1 - epsilon, 1 + epsilon_high)
    loss = -torch.minimum(ratio * advantages, clipped_ratio * advantages)
    clipped = ((ratio < 1 - epsilon) & (advantages < 0)) | ((ratio > 1 + epsilon_high) & (advantages > 0))
    return loss, clipped


class GroupSampledAlgorithm(TextRLAlgorithm):
    """Base of :class:`GRPO` and :class:`~agents.algorithms.rloo.RLOO`: each rollout plays
    ``n_envs // num_generations`` prompts ``num_generations`` times each (consecutive envs), and each
    update makes ``num_iterations`` passes over the rollout in minibatches of ``batch_size`` episodes,
    with the ratio to the rollout's policy clipped to ``[1 - epsilon, 1 + epsilon_high]``.

    Advantages are computed once per rollout, before any minibatch is cut, so groups need not stay
    together in a minibatch. No value head is used: it gets no gradient, and ``vf_coef`` plays no part.
    """

    _hyperparameters = ("num_generations", "num_iterations", "epsilon", "epsilon_high", "batch_size")

    def __init__(
        self,
        policy: Any,
        env: Any,
        num_generations: int,
        num_iterations: int,
        epsilon: float,
        epsilon_high: float | None,
        batch_size: int | None,
        **kwargs: Any,
    ) -> None:
        if isinstance(num_iterations, bool) or not isinstance(num_iterations, int) or num_iterations < 1:
            raise ValueError(f"num_iterations must be an integer >= 1, got {num_iterations!r}")
        if not 0 < epsilon < 1:
            raise ValueError(
                f"epsilon must be in (0, 1): the ratio is clipped below at 1 - epsilon, got {epsilon}"
            )
        if epsilon_high is not None and not epsilon_high > 0:
            raise ValueError(
                f"epsilon_high must be > 0 (the ratio is clipped above at 1 + epsilon_high; DAPO uses 0.28) or "
                f"None (= epsilon), got {epsilon_high}"
            )
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise ValueError(
                f"batch_size must be an integer >= 1 (episodes per minibatch) or None (the whole rollout), "
                f"got {batch_size!r}"
            )
        super().__init__(policy, env, **kwargs)
        check_num_generations(num_generations, self.n_envs)
        self.num_generations = num_generations
        self.num_iterations = num_iterations
        self.epsilon = epsilon
        self.epsilon_high = epsilon_high
        self.batch_size = batch_size

    @property
    def upper_epsilon(self) -> float:
        """The clip range above 1: ``epsilon_high``, or ``epsilon`` when that is None."""
        return self.epsilon if self.epsilon_high is None else self.epsilon_high

    def reset_options(self) -> dict | None:
        return {
            "index": grouped_prompt_index(self.rng, self.env.num_examples, self.n_envs, self.num_generations)
        }

    def minibatches(self, batch: PaddedTrajectories) -> list[tuple[torch.Tensor, np.ndarray]]:
        """One pass over the rollout: ``(rows [B], lengths [B])`` per minibatch of ``batch_size`` episodes.

        In a fresh random order (from the algorithm's generator) when there is more than one minibatch; the
        lengths are read to the host once per pass (they decide how :meth:`evaluate_episodes` pads)."""
        n = batch.lengths.shape[0]
        size = n if self.batch_size is None else min(self.batch_size, n)
        if size < n:
            order = torch.randperm(n, generator=self.generator, device=self.device)
        else:
            order = torch.arange(n, device=self.device)
        lengths = batch.lengths[order].cpu().numpy()
        return [(order[start : start + size], lengths[start : start + size]) for start in range(0, n, size)]


class GRPO(GroupSampledAlgorithm):
    """GRPO: group-relative advantages, a clipped per-token ratio, and the KL to a reference in the loss.

    Each update, for the rollout's groups of ``num_generations`` samples of a prompt (rewards R_i, each the
    episode's total reward: the completion is one action, so ``gamma`` plays no part):

    - ``A_i = (R_i - mean_group(R)) / (std + 1e-4)``, std per ``scale_rewards``; one scalar per sequence,
      on each of its tokens;
    - per token, ``l_t = -min(r_t A_i, clip(r_t, 1 - epsilon, 1 + epsilon_high) A_i) + beta * k3_t`` with
      ``r_t = pi(a_t|s_t) / pi_old(a_t|s_t)`` and ``k3_t`` :func:`k3_kl` to the reference;
    - the loss aggregates ``l_t`` as ``loss_type`` says (:func:`aggregate_token_losses`), minus
      ``ent_coef`` times the minibatch's mean entropy (not in TRL; 0 by default).

    Defaults and names are TRL 1.x's ``GRPOConfig`` (``num_generations=8``, ``beta=0``,
    ``loss_type="dapo"``, ``scale_rewards="group"``, ``num_iterations=1``, ``epsilon=0.2``), so a user moving
    from TRL gets the same objective. The learning rate is not (TRL's 1e-6 is for large pretrained models).

    :param num_generations: samples per prompt in each rollout (>= 2, must divide ``n_envs``).
    :param beta: weight of the KL to the reference in the loss (k3 estimator). 0 (TRL's default): no
        reference policy is made or scored. The reward-side ``kl_coef`` / ``target_kl_penalty`` of the other
        algorithms are refused, so there are never two KL terms.
    :param loss_type: ``"grpo"``, ``"bnpo"``, ``"dr_grpo"`` or ``"dapo"``: how per-token losses are averaged
        (:func:`aggregate_token_losses`).
    :param scale_rewards: ``"group"`` (divide by the group's std), ``"batch"`` (by the rollout's std) or
        ``"none"`` (Dr. GRPO's unscaled advantages).
    :param num_iterations: passes over each rollout (TRL's mu); with 1 and one minibatch the ratio is 1 and
        the clip never acts.
    :param epsilon: the ratio's clip range below 1, in (0, 1).
    :param epsilon_high: the clip range above 1 (None: ``epsilon``; DAPO's clip-higher uses 0.28).
    :param batch_size: episodes per minibatch (None: the whole rollout, one optimizer step per iteration).
    Other parameters: :class:`~agents.algorithms.base.TextRLAlgorithm` (``vf_coef`` and ``gamma`` unused).
    """

    _hyperparameters = GroupSampledAlgorithm._hyperparameters + ("beta", "loss_type", "scale_rewards")

    def __init__(
        self,
        policy: Any,
        env: Any,
        num_generations: int = 8,
        beta: float = 0.0,
        loss_type: str = "dapo",
        scale_rewards: str = "group",
        num_iterations: int = 1,
        epsilon: float = 0.2,
        epsilon_high: float | None = None,
        batch_size: int | None = None,
        learning_rate: float = 1e-4,
        **kwargs: Any,
    ) -> None:
        # A checkpoint passes back the base class's kl_coef=0.0 and target_kl_penalty=None: those are fine.
        if kwargs.get("kl_coef", 0.0) != 0.0 or kwargs.get("target_kl_penalty") is not None:
            raise ValueError(
                "GRPO puts its KL to the reference in the loss, weighted by beta= (k3 estimator, as TRL's "
                "GRPO); the reward-side penalty kl_coef= / target_kl_penalty= of REINFORCE, A2C, PPO and RLOO "
                f"is not accepted, so there are never two KL terms (got kl_coef={kwargs.get('kl_coef', 0.0)}, "
                f"target_kl_penalty={kwargs.get('target_kl_penalty')}): use beta= instead"
            )
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"unknown loss_type {loss_type!r}; valid: {list(LOSS_TYPES)}")
        if scale_rewards not in SCALE_REWARDS:
            raise ValueError(f"unknown scale_rewards {scale_rewards!r}; valid: {list(SCALE_REWARDS)}")
        if not beta >= 0:
            raise ValueError(f"beta must be >= 0 (0: no KL term and no reference policy), got {beta}")
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
        self.beta = beta
        self.loss_type = loss_type
        self.scale_rewards = scale_rewards

    @property
    def uses_kl_penalty(self) -> bool:
        """Whether the KL term is on (``beta > 0``): then a reference policy is frozen when training starts."""
        return self.beta > 0

    def train(self, traj: Trajectories) -> dict[str, float]:
        batch = traj.unpack()
        mask_all = batch.mask.float()
        rewards = batch.rewards.sum(1)  # R_i, [N]
        advantages_all = group_relative_advantages(rewards, self.num_generations, self.scale_rewards)
        reference_log_probs = None
        if self.beta > 0:
            self.ensure_reference_policy()
            with torch.no_grad():
                reference_log_probs = self.evaluate_rollout(batch, self.reference_policy).log_probs
        rollout_tokens = mask_all.sum()  # dapo's normaliser, the same for every minibatch
        max_new_tokens = 0
        if self.loss_type == "dr_grpo":  # normalised by the env's cap on an episode's tokens
            self._require_env("train with loss_type='dr_grpo'")
            max_new_tokens = self.env.setup.max_new_tokens
        prompt_lengths = self.policy.prompt_lengths(batch.prompts)
        no_kl = torch.zeros((), device=self.device)
        # Scored as the rollout sampled (eval mode): see PPO.train.
        self.policy.eval()
        logged: list[torch.Tensor] = []
        for _ in range(self.num_iterations):
            for chosen, lengths in self.minibatches(batch):
                scores, rows = self.evaluate_episodes(batch, chosen, lengths, prompt_lengths)
                width = scores.log_probs.shape[1]
                mask = mask_all[rows, :width]
                advantages = advantages_all[rows, None]  # [B, 1]: the sequence's advantage on each token

                log_ratio = (scores.log_probs - batch.log_probs[rows, :width]) * mask
                per_token, clipped = clipped_surrogate(
                    log_ratio.exp(), advantages, self.epsilon, self.upper_epsilon
                )
                policy_loss = aggregate_token_losses(
                    per_token, mask, self.loss_type, max_new_tokens, rollout_tokens
                )
                kl = no_kl
                if reference_log_probs is not None:
                    per_token_kl = k3_kl(scores.log_probs, reference_log_probs[rows, :width])
                    kl = aggregate_token_losses(
                        per_token_kl, mask, self.loss_type, max_new_tokens, rollout_tokens
                    )
                entropy = masked_mean(scores.entropy, mask)
                loss = policy_loss + self.beta * kl - self._entropy_bonus(entropy)

                with torch.no_grad():
                    clip_ratio = masked_mean(clipped.float(), mask)
                    logged.append(torch.stack([policy_loss, kl, entropy, clip_ratio]).detach())
                self._gradient_step(loss, policy_loss=policy_loss, kl=kl, loss=loss)

        zero_std = (rewards.view(-1, self.num_generations).std(1) < 1e-8).float().mean()  # no signal there
        reward_stats = torch.stack([rewards.std(), zero_std]).double()
        means = torch.cat([torch.stack(logged).double().mean(0), reward_stats]).tolist()  # one host read
        names = ("policy_loss", "kl", "entropy", "clip_ratio", "reward_std", "frac_reward_zero_std")
        return dict(zip(names, means, strict=True))
