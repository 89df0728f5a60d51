"""Filtered behaviour cloning: keep the best trajectories of a data set, then maximum likelihood on them.

A baseline of LMRL-Gym (Abdulhai et al. 2023) and of most offline RL papers: with ``keep_fraction=1.0`` it
is plain behaviour cloning (MLE on every trajectory), the baseline the others are measured against.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from agents.algorithms.offline.base import OfflineAlgorithm
from agents.rollout import PaddedTrajectories, Trajectories


def top_fraction(returns: torch.Tensor, keep_fraction: float) -> torch.Tensor:
    """bool ``[N]``: the episodes whose return is among the top ``keep_fraction`` of ``returns`` ``[N]``.

    ``k = ceil(keep_fraction * N)`` (at least 1) sets the threshold: the k-th highest return. Every episode
    whose return reaches it is kept, **ties included**: episodes with equal returns are never split by
    their order in the data set, so more than k may be kept (e.g. returns ``[1, 1, 1, 0]`` with
    ``keep_fraction=0.25`` keep the three 1s), never fewer.
    """
    if not 0 < keep_fraction <= 1:
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
    n = returns.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.bool, device=returns.device)
    # Rounded first so that e.g. 0.3 * 10 = 3.0000000000000004 keeps 3, not 4.
    k = max(1, math.ceil(round(keep_fraction * n, 9)))
    threshold = torch.topk(returns, k).values[-1]
    return returns >= threshold


class FilteredBC(OfflineAlgorithm):
    """Filtered behaviour cloning: the top ``keep_fraction`` of the data set's trajectories by return
    (:func:`top_fraction`, ties kept), then maximum likelihood of their tokens given their prompts.

    The loss is the mean token negative log-likelihood under the language model's own softmax (what
    :func:`agents.pretrain` minimises,
    :meth:`Policy.log_likelihood <agents.policies.base.Policy.log_likelihood>`)::

        L = - sum_{episodes, t < length} log pi(a_t | prompt, a_<t) / (number of tokens)

    :param keep_fraction: the fraction of trajectories kept, in (0, 1]; 1.0 is behaviour cloning on all of
        them.
    Other parameters: :class:`~agents.algorithms.offline.base.OfflineAlgorithm` (``dataset``,
    ``batch_size``, ``learning_rate``, ...). ``num_timesteps`` counts gradient steps.

    Example::

        model = FilteredBC("TransformerPolicy", "TextGen-Copy-v0", dataset="rollouts.pt", keep_fraction=0.3)
        model.learn(1_000)  # gradient steps
        agents.evaluate(model.policy, env, split="test")
    """

    _hyperparameters = ("batch_size", "keep_fraction")

    def __init__(
        self, policy: Any, env: Any, dataset: Any = None, keep_fraction: float = 0.1, **kwargs: Any
    ) -> None:
        if (
            isinstance(keep_fraction, bool)
            or not isinstance(keep_fraction, (int, float))
            or not 0 < keep_fraction <= 1
        ):
            raise ValueError(
                f"keep_fraction must be in (0, 1] (the fraction of trajectories kept; 1.0 keeps all), got "
                f"{keep_fraction!r}"
            )
        self.keep_fraction = float(keep_fraction)
        super().__init__(policy, env, dataset=dataset, **kwargs)

    def select_training_data(self, dataset: Trajectories) -> Trajectories:
        keep = top_fraction(dataset.episode_returns().float(), self.keep_fraction)
        return dataset.index(keep.nonzero().squeeze(1))

    def loss(self, batch: PaddedTrajectories) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        prompt_lengths = self.policy.prompt_lengths(batch.prompts)
        log_likelihood = self.policy.log_likelihood(
            batch.prompts, batch.tokens, batch.lengths, prompt_lengths
        )
        nll = -log_likelihood.sum() / batch.mask.sum().clamp(min=1)
        return nll, {"loss": nll}
