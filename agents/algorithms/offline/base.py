"""What the offline algorithms share: a data set instead of rollouts, gradient steps instead of env steps.

:class:`OfflineAlgorithm` keeps :class:`~agents.algorithms.base.TextRLAlgorithm`'s surface (``predict``,
``save`` / ``load`` with exact resumption, ``set_env``, callbacks, logger, seeding) and replaces its
:meth:`learn`: each step draws a minibatch of episodes from the data set and takes one gradient step, so
``num_timesteps`` (and ``total_timesteps``) count **gradient steps**, not env steps. A subclass implements
:meth:`OfflineAlgorithm.loss` (and may choose which episodes it trains on with
:meth:`OfflineAlgorithm.training_data`).
"""

from __future__ import annotations

import contextvars
import os
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from agents.algorithms.base import TextRLAlgorithm
from agents.algorithms.offline.dataset import (
    describe_source,
    needs_env,
    resolve_dataset,
    trajectories_state,
)
from agents.rollout import PaddedTrajectories, Trajectories

# Set while :meth:`OfflineAlgorithm.load` builds a model: its data set comes from the checkpoint, so the
# constructor must not build one from the env (replaying the references for nothing).
_LOADING = contextvars.ContextVar("lmrl_gym_offline_loading", default=False)


class OfflineAlgorithm(TextRLAlgorithm):
    """Base of the offline algorithms: learn from a fixed data set of trajectories, never from the env.

    :param policy: as :class:`~agents.algorithms.base.TextRLAlgorithm` (a policy object or the alias
        ``"TransformerPolicy"``).
    :param env: the task (an id or env object): it sizes an alias policy, provides the references when
        ``dataset`` is None and the tokenizer for a ``.jsonl`` file, and is where :func:`agents.evaluate`
        scores the result. Training never steps it.
    :param dataset: ``None`` (the task's training references as demonstrations, rewarded by the env), a
        :class:`~agents.rollout.Trajectories`, a path to a file written by ``Trajectories.save``, or a
        ``.jsonl`` path with fields ``prompt``, ``text``, ``reward`` (see
        :mod:`agents.algorithms.offline.dataset`).
        Checked at construction (with ``env``); the checkpoint keeps the data set itself, so a resumed run
        trains on the same episodes wherever the source went.
    :param batch_size: episodes per gradient step, drawn without replacement from the training data by the
        algorithm's seeded generator (the whole data set when it is smaller).
    :param learning_rate: AdamW step size (constant).
    Other parameters: :class:`~agents.algorithms.base.TextRLAlgorithm`. ``n_envs`` only sizes the (unused)
    training env; a KL leash (``kl_coef``, ``target_kl_penalty``) does not exist offline.

    Updates run with dropout off (eval mode), as every algorithm here scores episodes, so that a run is a
    function of its seed and nothing else.
    """

    _hyperparameters = ("batch_size",)

    def __init__(
        self,
        policy: Any,
        env: Any,
        dataset: Any = None,
        batch_size: int = 32,
        learning_rate: float = 1e-3,
        n_envs: int = 1,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("kl_coef", 0.0) != 0.0 or kwargs.get("target_kl_penalty") is not None:
            raise ValueError(
                f"{type(self).__name__} learns offline from a fixed data set: it has no KL leash "
                "(kl_coef must be 0 and target_kl_penalty None)"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        super().__init__(policy, env, learning_rate=learning_rate, n_envs=n_envs, **kwargs)
        self.batch_size = batch_size
        self._dataset_source = dataset
        self._dataset: Trajectories | None = None
        self._training_data: Trajectories | None = None
        if not _LOADING.get() and (env is not None or not needs_env(dataset)):
            self.dataset  # noqa: B018  (built and checked now: a bad data set fails at construction)

    # ------------------------------------------------------------------ the data set

    @property
    def dataset(self) -> Trajectories:
        """The whole data set (built from the ``dataset`` argument on first use, checked, on the policy's
        device)."""
        if self._dataset is None:
            setup = None if self.env is None else self.env.setup
            if setup is None and needs_env(self._dataset_source):
                self._require_env("dataset")
            self._dataset = resolve_dataset(self._dataset_source, self.policy, setup)
            self._training_data = None
        return self._dataset

    def training_data(self) -> Trajectories:
        """The episodes minibatches are drawn from (default: the whole data set); computed once."""
        if self._training_data is None:
            self._training_data = self.select_training_data(self.dataset)
        return self._training_data

    def select_training_data(self, dataset: Trajectories) -> Trajectories:
        """Which episodes of ``dataset`` to train on (a subclass filters here)."""
        return dataset

    def sample_batch(self) -> Trajectories:
        """A minibatch of ``batch_size`` distinct episodes of :meth:`training_data` (all of them when there
        are fewer), drawn with the algorithm's numpy generator (saved in checkpoints)."""
        data = self.training_data()
        n = data.num_episodes
        rows = self.rng.choice(n, size=min(self.batch_size, n), replace=False)
        return data.index(torch.as_tensor(rows, device=data.step_lengths.device))

    # ------------------------------------------------------------------ one update

    def loss(self, batch: PaddedTrajectories) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(objective, terms)`` of one gradient step on ``batch`` (``[B, T]`` tensors on the device);
        every term must be finite for the step to be taken (named in the error otherwise)."""
        raise NotImplementedError

    def after_step(self) -> None:
        """Runs after each optimizer step (e.g. ILQL's Polyak update of its target heads)."""

    def train(self, traj: Trajectories) -> dict[str, torch.Tensor]:
        """One gradient step on the episodes ``traj`` (a minibatch); returns the quantities to log
        (detached tensors: read at logging time, so a step costs no extra host read)."""
        batch = traj.unpack()
        self.policy.eval()  # dropout off: updates are a function of the seed alone (see the class doc)
        objective, terms = self.loss(batch)
        grad_norm = self._gradient_step(objective, **terms)
        self.after_step()
        return {**{k: v.detach() for k, v in terms.items()}, "grad_norm": grad_norm.detach()}

    # ------------------------------------------------------------------ the SB3 surface

    def learn(
        self,
        total_timesteps: int,
        callback: Any = None,
        log_interval: int = 100,
        tb_log_name: str | None = None,
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> OfflineAlgorithm:
        """Take ``total_timesteps`` gradient steps, each on a fresh minibatch of the data set.

        ``num_timesteps`` counts gradient steps for offline algorithms (there are no env steps). Keywords as
        Stable-Baselines3's:

        :param callback: an SB3 callback, a list of them, or a function ``(locals, globals) -> bool``; its
            ``on_step`` runs after every gradient step (returning False stops training).
        :param log_interval: log (and dump) every this many gradient steps (0: never).
        :param tb_log_name: the TensorBoard run folder's name (default: the class name, e.g. ``"ILQL"``).
        :param reset_num_timesteps: start counting from 0; False continues, e.g. after :meth:`load`.
        :param progress_bar: show a progress bar over the gradient steps.
        """
        if isinstance(total_timesteps, bool) or not isinstance(total_timesteps, int) or total_timesteps <= 0:
            raise ValueError(f"total_timesteps must be a positive integer, got {total_timesteps!r}")
        self._require_env("learn")
        if not self._custom_logger and (self._logger is None or self.tensorboard_log is not None):
            self._logger = self._configure_logger(tb_log_name or type(self).__name__, reset_num_timesteps)
        if reset_num_timesteps:
            self.num_timesteps = 0
        target = self.num_timesteps + total_timesteps if not reset_num_timesteps else total_timesteps
        self.training_data()  # built before the clock starts
        callback = self._init_callback(callback)
        callback.on_training_start(locals(), globals())
        bar = tqdm(total=target - self.num_timesteps, desc=type(self).__name__, disable=not progress_bar)
        started, steps_since_log = time.perf_counter(), 0
        while self.num_timesteps < target:
            stats = self.train(self.sample_batch())
            self.num_timesteps += 1
            self._n_updates += 1
            steps_since_log += 1
            bar.update(1)
            if log_interval and self._n_updates % log_interval == 0:
                self._log_offline(stats, steps_since_log, time.perf_counter() - started)
                started, steps_since_log = time.perf_counter(), 0
            callback.update_locals(locals())
            if callback.on_step() is False:
                break
        bar.close()
        callback.on_training_end()
        return self

    def _log_offline(self, stats: dict[str, torch.Tensor], steps: int, seconds: float) -> None:
        log = self.logger
        log.record("time/total_timesteps", self.num_timesteps)
        log.record("time/gradient_steps_per_s", steps / max(seconds, 1e-9))
        log.record("train/n_updates", self._n_updates)
        log.record("train/episodes", self.training_data().num_episodes)
        for key, value in stats.items():
            log.record(f"train/{key}", float(value))
        log.dump(self.num_timesteps)

    # ------------------------------------------------------------------ checkpoints

    @classmethod
    def load(
        cls, path: str | os.PathLike, env: Any = None, device: str | torch.device = "auto"
    ) -> OfflineAlgorithm:
        """Load what :meth:`save` wrote, the data set included (see
        :meth:`TextRLAlgorithm.load <agents.algorithms.base.TextRLAlgorithm.load>`)."""
        token = _LOADING.set(True)
        try:
            return super().load(path, env=env, device=device)
        finally:
            _LOADING.reset(token)

    def _extra_state(self) -> dict[str, Any]:
        # The data set itself (packed, on the CPU), so that a resumed run draws the same minibatches even if
        # the source file changed or was an object in memory. Before it is built (a .jsonl source given
        # without env), its path is kept instead.
        if self._dataset is not None:
            return {
                "dataset": {
                    k: v.cpu() if isinstance(v, torch.Tensor) else v
                    for k, v in trajectories_state(self._dataset).items()
                }
            }
        source = self._dataset_source
        return {"dataset": None, "dataset_source": None if source is None else str(source)}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        saved = state.get("dataset")
        if saved is not None:
            traj = Trajectories(**saved)
            self._dataset = resolve_dataset(traj, self.policy, None)
            self._training_data = None
        else:
            source = state.get("dataset_source")
            self._dataset_source = None if source is None else Path(source)

    def __repr__(self) -> str:
        source = describe_source(self._dataset_source)
        return f"{type(self).__name__}(dataset={source!r}, policy={type(self.policy).__name__})"
