"""``TextEvalCallback``: evaluate on the validation split during ``learn``, log it, keep the best policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback

from agents.evaluation import evaluate
from agents.policies.registry import load_policy, policy_kind_of


class TextEvalCallback(BaseCallback):
    """Every ``eval_freq`` rollouts, run :func:`agents.evaluate` and log ``eval/<metric>``.

    With ``best_model_save_path`` the policy is saved there (``best_policy.pt`` for a
    :class:`~agents.policies.transformer.TransformerPolicy`; ``best_`` + the checkpoint name its kind
    registers for another, e.g. the folder ``best_policy`` of an ``HFPolicy``) whenever ``metric``
    improves. ``evaluations`` keeps ``(num_timesteps, results)`` of every evaluation.

    :param eval_env: the env to evaluate on (an id or env of the same task).
    :param eval_freq: rollouts between evaluations.
    :param split: ``"validation"`` by default (keep the test split for the end).
    :param method: / :param beam_size: decoding (``"greedy"`` or ``"beam"``).
    :param metric: what "best" means, a key of :func:`agents.evaluate`'s result (higher is better).
    :param max_examples: evaluate on the first N examples only (speed).
    """

    def __init__(
        self,
        eval_env: Any,
        eval_freq: int = 10,
        split: str = "validation",
        method: str = "greedy",
        beam_size: int = 4,
        metric: str = "mean_reward",
        max_examples: int | None = 500,
        best_model_save_path: str | Path | None = None,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        if eval_freq < 1:
            raise ValueError(f"eval_freq must be >= 1, got {eval_freq}")
        self.eval_env = eval_env
        self.eval_freq = eval_freq
        self.split = split
        self.method = method
        self.beam_size = beam_size
        self.metric = metric
        self.max_examples = max_examples
        self.best_model_save_path = None if best_model_save_path is None else Path(best_model_save_path)
        self.best = float("-inf")
        self.best_timesteps: int | None = None  # when the best check ran (None before the first)
        self.evaluations: list[tuple[int, dict[str, Any]]] = []

    def _on_step(self) -> bool:
        if self.n_calls % self.eval_freq:
            return True
        results = evaluate(
            self.model.policy,
            self.eval_env,
            split=self.split,
            method=self.method,
            beam_size=self.beam_size,
            max_examples=self.max_examples,
        )
        if self.metric not in results:
            raise ValueError(
                f"unknown metric {self.metric!r}; valid: {sorted(k for k in results if k != 'method')}"
            )
        self.evaluations.append((self.num_timesteps, results))
        for key in (
            "bleu",
            "mean_sentence_bleu",
            "chrf",
            "exact_match",
            "mean_reward",
            "lm_score",
            "distinct_2",
            "mean_length",
        ):
            self.logger.record(f"eval/{key}", results[key])
        if results[self.metric] > self.best:
            self.best = results[self.metric]
            self.best_timesteps = self.num_timesteps
            if self.best_model_save_path is not None:
                self.best_model_save_path.mkdir(parents=True, exist_ok=True)
                self.model.policy.save(self._best_path())
            if self.verbose:
                print(f"new best {self.metric} {self.best:.4f} at {self.num_timesteps} steps")
        return True

    def _best_path(self) -> Path:
        return self.best_model_save_path / f"best_{policy_kind_of(self.model.policy).checkpoint_name}"

    def best_policy(self, env: Any = None):
        """The policy of the best check, read back from where it was saved; None before the first check.

        :param env: checked against the policy (see the policy class's ``load``).
        :raises ValueError: without ``best_model_save_path`` (nothing was kept).
        """
        if self.best_model_save_path is None:
            raise ValueError("best_policy needs best_model_save_path: without it no policy is kept")
        if self.best_timesteps is None:
            return None
        kind = policy_kind_of(self.model.policy)
        return load_policy(kind.name, self._best_path(), env=env, device=self.model.policy.device)
