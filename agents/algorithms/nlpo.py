"""NLPO, Natural Language Policy Optimization (Ramamurthy et al. 2023, RL4LMs): PPO, masked action space.

Notes
    At every step the policy may only take the ids of the *top-p set* of a *masking policy*: the fewest most
    probable ids whose probability adds up to at least ``top_mask`` (at least ``min_tokens_to_keep`` ids).
    The masking policy is a frozen copy of the policy, refreshed every ``target_update_iterations`` updates
    (RL4LMs' names; ``top_mask`` 0.9 and ``target_update_iterations`` 5 as in its IMDB config). The rollout
    samples from the policy's softmax restricted to that set, stores the log-probs of that restricted
    softmax, and the update scores the same restricted softmax in the PPO ratio and the entropy bonus.
    Everything else is :class:`~agents.algorithms.PPO` (GAE, clipping, epochs of minibatches of episodes);
    the KL leash compares the masked log-prob of each action with the unmasked reference's. The mask exists
    in training only: ``predict``, ``evaluate`` and decoding use the trained policy as it is.

Storage
    The mask is not stored as ids: per step the trajectory keeps the size ``k`` of the top-p set (one narrow
    int, :attr:`Trajectories.extra <agents.rollout.Trajectories.extra>`). The update re-scores the rollout
    with the masking policy (one teacher-forced pass, no gradient: it is frozen between refreshes, so it is
    the model that sampled) and keeps the ``k`` best ranked ids. Keeping by rank with the stored ``k`` (not
    by re-summing probabilities against ``top_mask``) makes the mask insensitive to float differences
    between the rollout's cached steps and the update's teacher-forced pass, except where two ids tie within
    that noise at the boundary of the set; there, if the sampled id fell out, it takes the place of the last
    kept id (``train/mask_rank_flips`` counts those steps), so the sampled action is always inside the mask.

Can I use?
    Any :class:`~agents.policies.base.Policy` (the update reads whole distributions through its
    ``sequence_logits``): :class:`~agents.TransformerPolicy` and :class:`~agents.policies.hf.HFPolicy`
    (LoRA too: its masking policy is then a full copy, since the frozen copy of a LoRA policy only scores).

Example
    ``NLPO("TransformerPolicy", "TextGen-v0", seed=0).learn(20_000)``

Results
    Small copy task from scratch (2 x 64 transformer, lr 1e-4, 64 envs, 40k steps, one CPU thread, ~20 s):
    test mean reward 0.068 -> 1.000 (seed 0), 0.000 -> 1.000 (seed 1), 0.046 -> 0.943 (seed 2). Ids masked
    per step on ``TextGen-v0`` (202 takeable): ~30 from random weights, ~182 after one epoch of MLE.
    RL4LMs' users could not reproduce the paper's IMDB gain over PPO (its issue 28: NLPO 0.496, PPO 0.604,
    the paper's NLPO 0.637).
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from agents.algorithms.ppo import PPO
from agents.policies.base import Policy, SequenceScores, score_actions
from agents.rollout import PaddedTrajectories, Trajectories, collect_trajectories, smallest_int_dtype

# ------------------------------------------------------------------ the mask


def top_p_counts(logits: torch.Tensor, top_mask: float, min_tokens_to_keep: int) -> torch.Tensor:
    """Size of the top-p set of each distribution: long ``[...]`` for logits ``[..., V]``.

    The top-p set is the fewest most probable ids whose probabilities add up to at least ``top_mask``: an id
    of rank r (0 = most probable) is in it when the ids ranked before it hold less than ``top_mask``. Then
    at least ``min_tokens_to_keep``, and at most the ids of finite logit (an id that can never be taken is
    never "kept").
    """
    log_p = torch.log_softmax(logits.float(), dim=-1)
    sorted_p = log_p.sort(dim=-1, descending=True, stable=True).values.exp()
    # Mass strictly before each rank, as a shifted sum (not cumsum - p: that subtraction rounds).
    before = torch.cumsum(sorted_p, dim=-1)[..., :-1]
    before = torch.cat([torch.zeros_like(sorted_p[..., :1]), before], dim=-1)
    counts = (before < top_mask).sum(-1)
    finite = torch.isfinite(logits).sum(-1)
    return torch.minimum(counts.clamp(min=min_tokens_to_keep), finite)


def ranks(logits: torch.Tensor) -> torch.Tensor:
    """long ``[..., V]``: each id's rank in its distribution, 0 = the largest logit; equal logits are ranked
    by id, the smaller first (a stable sort), so the order is a function of the logits alone."""
    order = torch.argsort(logits, dim=-1, descending=True, stable=True)
    positions = torch.arange(logits.shape[-1], device=logits.device).expand_as(order)
    return torch.empty_like(order).scatter_(-1, order, positions)


def keep_top(logits: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """bool ``[..., V]``: the ``counts [...]`` best ranked ids of each distribution (:func:`ranks`)."""
    return ranks(logits) < counts[..., None]


class TopPMask:
    """NLPO's :class:`~agents.rollout.LogitsProcessor`: runs the masking policy's own KV cache beside the
    policy's and lets each step sample only from the masking policy's top-p set.

    Its record per step is the size of that set (narrow int), from which the update rebuilds the mask.

    :param masking_policy: the frozen masking policy (decoded in eval mode, no gradients).
    :param top_mask: / :param min_tokens_to_keep: as in :class:`NLPO`.
    """

    def __init__(self, masking_policy: Policy, top_mask: float, min_tokens_to_keep: int) -> None:
        self.policy = masking_policy
        self.top_mask = top_mask
        self.min_tokens_to_keep = min_tokens_to_keep
        self.record_dtype = smallest_int_dtype(masking_policy.vocab_size)
        self.logits: torch.Tensor | None = None  # [B, V] the masking policy's, for the rows the cache holds
        self.state: Any = None

    def start(self, prompt_ids: torch.Tensor) -> None:
        self.logits, self.state = self.policy.start(prompt_ids)

    def process(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        counts = top_p_counts(self.logits, self.top_mask, self.min_tokens_to_keep)
        allowed = keep_top(self.logits, counts)
        return logits.masked_fill(~allowed, float("-inf")), counts.to(self.record_dtype)

    def select(self, rows: torch.Tensor) -> None:
        self.state = self.policy.select(self.state, rows)
        self.logits = self.logits[rows]

    def step(self, tokens: torch.Tensor) -> None:
        self.logits, self.state = self.policy.step(self.state, tokens)


# ------------------------------------------------------------------ the algorithm


class NLPO(PPO):
    """PPO whose every step samples from, and is scored on, the policy restricted to the top-p set of a
    periodically refreshed frozen copy of itself (see the module's notes).

    :param top_mask: the probability mass of the masking policy's most likely ids that stay allowed, in
        (0, 1]; 1 keeps every id (plain PPO). RL4LMs' name and default (0.9).
    :param min_tokens_to_keep: the fewest ids a step keeps allowed, >= 1. RL4LMs used 100 on GPT-2's 50k
        vocabulary, which would keep every id of our 10-205-id tasks (masking nothing). 2 lets the mask act
        on any vocabulary and still leaves every step a choice: with 1 id left, the masked softmax is a point
        mass whose log-prob is 0, so a step where the masking policy is confident (and wrong) gives no
        gradient at all. Measured on the small copy task (seed 0, 40k steps): 1 reached 0.90, 2 reached 1.0.
    :param target_update_iterations: refresh the masking policy (copy the policy's weights into it) after
        every this many updates (RL4LMs' name; its IMDB config used 5). The first masking policy is the
        policy as it is when the first rollout starts.
    Other parameters: :class:`~agents.algorithms.PPO` and :class:`~agents.algorithms.base.TextRLAlgorithm`.

    Logged beyond PPO's: ``train/masked_ids_mean`` (mean number of ids the mask removed per step, among the
    ids the policy could take), ``train/mask_rank_flips`` (steps whose sampled id the update's re-scoring
    ranked outside the set: float ties at its boundary; see the module's notes).
    """

    _hyperparameters = (*PPO._hyperparameters, "top_mask", "min_tokens_to_keep", "target_update_iterations")
    # Updates since the masking policy was last refreshed: a resumed run refreshes when an unbroken one would.
    _state_attributes = ("masking_policy_age",)

    def __init__(
        self,
        policy: Any,
        env: Any,
        top_mask: float = 0.9,
        min_tokens_to_keep: int = 2,
        target_update_iterations: int = 5,
        **kwargs: Any,
    ) -> None:
        if isinstance(top_mask, bool) or not isinstance(top_mask, (int, float)) or not 0 < top_mask <= 1:
            raise ValueError(
                f"top_mask must be a probability in (0, 1] (the mass of the masking policy's most likely ids "
                f"that stay allowed; 1 disables masking), got {top_mask!r}"
            )
        for name, value, meaning in (
            ("min_tokens_to_keep", min_tokens_to_keep, "the fewest ids a step keeps allowed"),
            (
                "target_update_iterations",
                target_update_iterations,
                "updates between masking-policy refreshes",
            ),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1 ({meaning}), got {value!r}")
        super().__init__(policy, env, **kwargs)
        self.top_mask = float(top_mask)
        self.min_tokens_to_keep = min_tokens_to_keep
        self.target_update_iterations = target_update_iterations
        self.masking_policy: Policy | None = None
        self.masking_policy_age = 0

    # ------------------------------------------------------------------ the masking policy

    def _new_masking_policy(self) -> Policy:
        masking = self.policy.frozen_copy()
        if not all(hasattr(masking, name) for name in ("start", "step", "select")):
            # A LoRA policy's frozen copy shares the base model and can only score; the mask must decode.
            masking = copy.deepcopy(self.policy).eval().requires_grad_(False)
        return masking

    def ensure_masking_policy(self) -> None:
        """Freeze a copy of the policy as the masking policy if there is none yet (the first rollout)."""
        if self.masking_policy is None:
            self.masking_policy = self._new_masking_policy()
            self.masking_policy_age = 0

    def update_masking_policy(self) -> None:
        """Copy the policy's current weights into the masking policy (in place)."""
        self.masking_policy.load_state_dict(self.policy.state_dict())
        self.masking_policy_age = 0

    def collect_rollout(self) -> Trajectories:
        self._require_env("collect_rollout")
        if not self._env_seeded:
            self.env.reset(seed=self.seed)
            self._env_seeded = True
        self.ensure_masking_policy()
        mask = TopPMask(self.masking_policy, self.top_mask, self.min_tokens_to_keep)
        return collect_trajectories(
            self.policy,
            self.env,
            self._sampling_seed,
            self.reset_options(),
            mask,
            stream=self._next_rollout(),
        )

    @torch.no_grad()
    def action_masks(
        self, batch: PaddedTrajectories, prompt_lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The ids each action of ``batch`` was sampled among, rebuilt from the stored set sizes.

        One teacher-forced pass of the masking policy over the rollout (in chunks of ``batch_size``
        episodes, so that the ``[B, T, V]`` logits stay the update's size); no loop over time.

        :return: ``(allowed, masked, flips)``: bool ``[N, T, V]`` (beyond an episode: only its filler
            action), the number of takeable ids left out per step ``[N, T]``, and bool ``[N, T]`` where the
            re-scoring ranked the sampled id outside the set (it then replaces the last kept id).
        """
        n = batch.tokens.shape[0]
        valid = batch.mask
        actions = torch.where(valid, batch.tokens.long(), self.policy.tokenizer.eos_id)
        counts = batch.extra.long() * valid  # 0 beyond an episode: only the filler action stays
        allowed, masked, flips = [], [], []
        for start in range(0, n, self.batch_size):
            rows = slice(start, start + self.batch_size)
            scores, _ = self.masking_policy.sequence_logits(
                batch.prompts[rows],
                batch.tokens[rows],
                batch.lengths[rows],
                prompt_lengths[rows],
            )
            rank = ranks(scores)
            action_rank = rank.gather(-1, actions[rows, :, None]).squeeze(-1)
            # The sampled id ranked outside the stored count only if float noise swapped it with a tied id
            # at the set's boundary: it then takes the last kept place, so the set keeps its size.
            flipped = (action_rank >= counts[rows]) & valid[rows]
            keep = rank < (counts[rows] - flipped.long())[..., None]
            keep.scatter_(-1, actions[rows, :, None], True)
            allowed.append(keep)
            masked.append((torch.isfinite(scores) & ~keep).sum(-1) * valid[rows])
            flips.append(flipped)
        return torch.cat(allowed), torch.cat(masked), torch.cat(flips)

    # ------------------------------------------------------------------ the update

    def train(self, traj: Trajectories) -> dict[str, float]:
        """PPO's update (:meth:`PPO.train`) with every action scored under its step's mask; then the masking
        policy ages by one rollout and is refreshed on schedule."""
        if traj.step_extra is None or self.masking_policy is None:
            raise ValueError(
                "NLPO.train needs a rollout from NLPO.collect_rollout (it stores the mask's size per step)"
            )
        stats = super().train(traj)
        self.masking_policy_age += 1
        if self.masking_policy_age >= self.target_update_iterations:
            self.update_masking_policy()
        return stats

    def _update_context(self, batch: PaddedTrajectories, prompt_lengths: torch.Tensor) -> dict[str, Any]:
        # The ids each action could have been sampled among: the ratio's and the entropy's support.
        allowed, masked_ids, flips = self.action_masks(batch, prompt_lengths)
        actions = torch.where(batch.mask, batch.tokens.long(), self.policy.tokenizer.eos_id)
        return {
            "allowed": allowed,
            "masked_ids": masked_ids,
            "flips": flips,
            "actions": actions,
            "batch": batch,
        }

    def _score_minibatch(
        self, batch, rows, lengths, prompt_lengths, context
    ) -> tuple[SequenceScores, torch.Tensor]:
        # The policy's softmax restricted to the masking policy's top-p ids (log-probs and entropy alike).
        width = int(lengths.max())
        logits, values = self.policy.sequence_logits(
            batch.prompts[rows], batch.tokens[rows, :width], batch.lengths[rows], prompt_lengths[rows]
        )
        allowed = context["allowed"][rows, :width]
        scores = score_actions(
            logits.masked_fill(~allowed, float("-inf")),
            context["actions"][rows, :width],
            values,
            batch.mask[rows, :width],
            ~allowed,
        )
        return scores, rows

    def _context_stats(self, context: dict[str, Any]) -> dict[str, float]:
        steps = context["batch"].mask.sum()
        return {
            "masked_ids_mean": float(context["masked_ids"].sum() / steps),
            "mask_rank_flips": float(context["flips"].sum()),
        }

    # ------------------------------------------------------------------ checkpoints

    def _extra_state(self) -> dict[str, Any]:
        masking = None if self.masking_policy is None else self.masking_policy.state_dict()
        return {"masking_policy": masking}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        if state.get("masking_policy") is not None:
            self.masking_policy = self._new_masking_policy()
            self.masking_policy.load_state_dict(state["masking_policy"])
