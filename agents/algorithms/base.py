"""What REINFORCE, A2C and PPO share: the Stable-Baselines3 surface, rollouts, the KL leash, checkpoints.

A subclass implements :meth:`TextRLAlgorithm.train` (one update from a batch of trajectories) and lists
its own hyper-parameters in ``_hyperparameters``. The policy is anything that implements the
:class:`~agents.policies.base.Policy` protocol; nothing else about it is assumed.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, ConvertCallback
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.utils import configure_logger
from tqdm.auto import tqdm

from agents.devices import resolve_device
from agents.policies.base import Policy, SequenceScores, check_policy, env_setup_of
from agents.policies.registry import load_policy, policy_kind_of
from agents.policies.transformer import TransformerPolicy
from agents.rollout import PaddedTrajectories, Trajectories, collect_trajectories
from agents.sampling import sample_logits
from lmrl_gym.atomic_file import atomic_path
from lmrl_gym.vector_env import TextGenVectorEnv

POLICY_ALIASES = ("TransformerPolicy",)
# /2 names the policy's kind (a file or a folder checkpoint) and stores the KL reference as the state_dict of
# the policy's frozen copy; /1 (round 1: always a TransformerPolicy file) is still read.
ALGORITHM_FORMAT = "lmrl_gym.algorithm/2"
READABLE_FORMATS = ("lmrl_gym.algorithm/1", ALGORITHM_FORMAT)


# What one more forward/backward pass costs, in padded positions (one row position of the trunk), on a
# CPU: ~1.4 ms fixed vs ~0.035 ms per position for the default 2 x 128 transformer (measured). Elsewhere
# (a GPU) padding is nearly free and a pass is not, so episodes are not split by length there.
GROUP_PASS_COST = {"cpu": 40.0}


def length_groups(
    lengths: np.ndarray, prompt_width: int, pass_cost: float | None
) -> list[tuple[int, int, int]]:
    """Split episodes sorted by length into at most three contiguous groups, each scored by its own
    teacher-forced pass padded to its longest episode, minimising padded positions plus ``pass_cost`` per
    pass. Returns ``(start, stop, width)`` per non-empty group. Vectorised over all split pairs.

    :param lengths: the episodes' lengths, sorted ascending (host ints).
    """
    b = len(lengths)
    if pass_cost is None or b < 2:
        return [(0, b, int(lengths[-1]) if b else 0)]
    row = prompt_width + lengths.astype(np.float64)  # a row's positions when its group is as wide as it
    cut = np.arange(b + 1)
    i, j = np.meshgrid(cut[1:], cut[1:], indexing="ij")  # groups [0, i), [i, j), [j, b)
    valid = i <= j
    last = np.concatenate([row, [0.0]])  # row[k - 1] is the width of a group ending at k
    cost = i * last[i - 1] + (j - i) * last[j - 1] + (b - j) * row[-1] + pass_cost * (1 + (j > i) + (j < b))
    cost = np.where(valid, cost, np.inf)
    first, second = np.unravel_index(np.argmin(cost), cost.shape)
    bounds = sorted({0, int(i[first, second]), int(j[first, second]), b})
    return [(lo, hi, int(lengths[hi - 1])) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]


def require_tensorboard(folder: str | os.PathLike) -> None:
    """Raise ImportError with what to do unless TensorBoard (what ``tensorboard_log`` writes with) is
    installed; Stable-Baselines3 would only fail at the first ``learn``, with a bare assertion."""
    if importlib.util.find_spec("tensorboard") is None:
        raise ImportError(
            f"tensorboard_log={str(folder)!r} needs TensorBoard, which is not installed: "
            "pip install tensorboard (or leave tensorboard_log=None and log with set_logger(configure(folder, "
            '["csv"])))'
        )


class KLController:
    """The coefficient beta of the per-token penalty ``r_t -= beta * (log pi(a_t|s_t) - log pi_ref(a_t|s_t))``.

    Fixed when ``target`` is None; otherwise adaptive as in RL4LMs (Ramamurthy et al. 2023):
    ``beta <- beta * (1 + 0.1 * clip((KL - target) / target, -0.2, 0.2))`` after each rollout, KL being
    the mean per-episode sum of the per-token KL estimates.
    """

    def __init__(self, coef: float, target: float | None = None) -> None:
        if coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {coef}")
        if target is not None and target <= 0:
            raise ValueError(f"target_kl_penalty must be > 0 (or None for a fixed coefficient), got {target}")
        self.coef = float(coef)
        self.target = target

    def update(self, episode_kl: float) -> None:
        if self.target is not None:
            error = float(np.clip((episode_kl - self.target) / self.target, -0.2, 0.2))
            self.coef *= 1 + 0.1 * error


class TextRLAlgorithm:
    """Base of the policy-gradient algorithms, with Stable-Baselines3's surface.

    :param policy: any :class:`~agents.policies.base.Policy` (a :class:`TransformerPolicy`, an
        :class:`~agents.policies.hf.HFPolicy`, a user's own), or the alias ``"TransformerPolicy"`` (built
        for ``env`` with ``policy_kwargs``).
    :param env: an env id, a ``TextGenEnv`` or a ``TextGenVectorEnv``; training runs on a native
        ``TextGenVectorEnv`` of the same task, reward and lengths (train split) with ``n_envs`` episodes
        per rollout. None (a policy object only): the model can :meth:`predict` but not :meth:`learn`
        until :meth:`set_env`, as after ``load(path)`` without ``env``.
    :param learning_rate: AdamW step size.
    :param n_envs: episodes per rollout (all played in lock-step with one KV cache).
    :param gamma: discount (1 for text: the reward mostly comes at the end).
    :param ent_coef: entropy bonus weight; :param vf_coef: value loss weight.
    :param max_grad_norm: gradient-norm clipping.
    :param value_trunk_gradient: whether the value loss trains the trunk the value head shares with the
        language model (True, the default) or the value head only (False: it reads detached features). From a
        pretrained start False keeps the critic's early, large errors out of the language model: PPO on the
        suite's numbers start (BLEU 72.5; lr 1e-5, kl_coef 0.01, 30k tokens) ends at 41.4 BLEU with the
        shared gradient and 72.7 without it. Needs a policy with a ``value_trunk_gradient`` attribute (both
        built-in policies).
    :param kl_coef: weight beta of the per-token KL penalty to the reference policy (0 disables it).
    :param target_kl_penalty: None for a fixed ``kl_coef``, else the per-episode KL the adaptive
        controller aims at.
    :param reference_policy: the frozen reference; default: a copy of the policy when training first
        starts (``learn``, or the first update driven by another loop such as :class:`agents.IRL`), e.g.
        right after ``pretrain``.
    :param seed: seeds torch's global generator before a policy is built from an alias, so that its
        initial weights are fixed (as Stable-Baselines3's ``seed`` does), and the env's example sequence,
        sampling and any grouping of prompts.
    :param device: ``"auto"`` (CUDA when present), ``"cpu"``, ...; a policy object keeps its own device.
    :param verbose: 0 silent, 1 log to stdout.
    :param tensorboard_log: a folder for TensorBoard logs, one run folder ``{tb_log_name}_{n}`` per
        :meth:`learn` as Stable-Baselines3 writes them (None: none). Needs the ``tensorboard`` package.
    """

    _hyperparameters: ClassVar[tuple[str, ...]] = ()
    # Learned state beyond the weights and optimizer that a checkpoint must keep (e.g. a running baseline).
    _state_attributes: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        policy: Policy | str,
        env: Any,
        learning_rate: float = 3e-4,
        n_envs: int = 64,
        gamma: float = 1.0,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float = 1.0,
        value_trunk_gradient: bool = True,
        kl_coef: float = 0.0,
        target_kl_penalty: float | None = None,
        reference_policy: Policy | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        seed: int | None = None,
        device: str | torch.device = "auto",
        verbose: int = 0,
        tensorboard_log: str | None = None,
    ) -> None:
        setup = None if env is None else env_setup_of(env)
        if isinstance(policy, str):
            if policy not in POLICY_ALIASES:
                raise ValueError(
                    f"unknown policy alias {policy!r}; valid: {list(POLICY_ALIASES)} or a policy object "
                    "(agents.policies.base.Policy)"
                )
            if env is None:
                raise ValueError(f"the policy alias {policy!r} needs env= to size the policy")
            if seed is not None:
                # As Stable-Baselines3's seed does: the global generator, which draws the weights (on the
                # CPU, then moved). Callers that seeded it with the same value just before get the same
                # weights (and the same generator state afterwards) as before seed= reached construction.
                torch.manual_seed(seed)
            policy = TransformerPolicy.for_env(env, device=device, **(policy_kwargs or {}))
        else:
            check_policy(policy)
        if env is not None:
            policy.check_env(env)
        if tensorboard_log is not None:
            require_tensorboard(tensorboard_log)
        for name, value in (("learning_rate", learning_rate), ("max_grad_norm", max_grad_norm)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if not isinstance(n_envs, int) or n_envs < 1:
            raise ValueError(f"n_envs must be a positive integer, got {n_envs!r}")
        if not 0 <= gamma <= 1:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        if hasattr(policy, "value_trunk_gradient"):
            policy.value_trunk_gradient = bool(value_trunk_gradient)
        elif not value_trunk_gradient:
            raise ValueError(
                f"value_trunk_gradient=False needs a policy with a value_trunk_gradient attribute; "
                f"{type(policy).__name__} has none"
            )
        self.value_trunk_gradient = bool(value_trunk_gradient)
        self.policy = policy
        self.env_kwargs = None if setup is None else dict(setup.kwargs)
        self.learning_rate = learning_rate
        self.n_envs = n_envs
        self.gamma = gamma
        self.ent_coef = ent_coef
        self.vf_coef = vf_coef
        self.max_grad_norm = max_grad_norm
        self.kl = KLController(kl_coef, target_kl_penalty)
        self.reference_policy = reference_policy
        self.policy_kwargs = policy_kwargs
        self.seed = seed
        self.verbose = verbose
        self.tensorboard_log = tensorboard_log
        self.device = policy.device
        # The fused kernel updates every parameter in one call (the per-tensor loop was ~10% of a PPO update
        # on CPU); same AdamW maths.
        fused = True if self.device.type in ("cpu", "cuda") else None
        self.optimizer = torch.optim.AdamW(
            policy.parameters(), lr=learning_rate, weight_decay=0.0, fused=fused
        )
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(0 if seed is None else seed)
        self.rng = np.random.default_rng(seed)
        # Rollout noise is keyed by (sampling seed, rollout number, env index, step): see agents.sampling.
        self._sampling_seed = int(self.rng.integers(2**62)) if seed is None else int(seed)
        self._n_rollouts = 0
        self.env = None if env is None else self._make_env()
        self.num_timesteps = 0
        self._n_updates = 0
        self._env_seeded = False
        # The env's sampling state from a checkpoint loaded without env: applied by the first set_env.
        self._saved_env_state: dict[str, Any] | None = None
        self._logger: Logger | None = None
        self._custom_logger = False
        self.ep_info_buffer: list[float] = []

    # ------------------------------------------------------------------ environment

    def _make_env(self) -> TextGenVectorEnv:
        return TextGenVectorEnv(
            num_envs=self.n_envs,
            split="train",
            output="torch",
            info_text=False,
            device=self.device,
            **self.env_kwargs,
        )

    def get_env(self) -> TextGenVectorEnv | None:
        return self.env

    def set_env(self, env: Any) -> None:
        """Train on ``env`` from now on (it must match the policy's tokenizer and lengths).

        On a model loaded without ``env``, the first ``set_env`` also restores the saved env's example
        sequence, so that ``load(path)`` + ``set_env(env)`` continues as ``load(path, env=env)`` does."""
        self.policy.check_env(env)
        self.env_kwargs = dict(env_setup_of(env).kwargs)
        self.env = self._make_env()
        self._env_seeded = False
        if self._saved_env_state is not None:
            self._restore_env_state(self._saved_env_state)
            self._saved_env_state = None

    @property
    def logger(self) -> Logger:
        if self._logger is None:
            self._logger = self._configure_logger(type(self).__name__, reset_num_timesteps=True)
        return self._logger

    def set_logger(self, logger: Logger) -> None:
        """Use an SB3 logger, e.g. ``stable_baselines3.common.logger.configure(folder, ["stdout", "csv"])``;
        kept by every later :meth:`learn` (which otherwise configures its own, as SB3 does)."""
        self._logger = logger
        self._custom_logger = True

    def _configure_logger(self, tb_log_name: str, reset_num_timesteps: bool) -> Logger:
        """Stable-Baselines3's logger for a :meth:`learn`: stdout when ``verbose``, and with
        ``tensorboard_log`` a run folder ``{tb_log_name}_{n}`` (the next free n, or the last one when
        training continues with ``reset_num_timesteps=False``)."""
        if self.tensorboard_log is not None:
            require_tensorboard(self.tensorboard_log)
        return configure_logger(self.verbose, self.tensorboard_log, tb_log_name, reset_num_timesteps)

    # ------------------------------------------------------------------ rollouts and the KL leash

    def collect_rollout(self) -> Trajectories:
        self._require_env("collect_rollout")
        if not self._env_seeded:
            self.env.reset(seed=self.seed)
            self._env_seeded = True
        return collect_trajectories(
            self.policy, self.env, self._sampling_seed, self.reset_options(), stream=self._next_rollout()
        )

    def _next_rollout(self) -> int:
        """This rollout's number (the sampling noise's stream), counting it."""
        self._n_rollouts += 1
        return self._n_rollouts - 1

    def reset_options(self) -> dict | None:
        """Options for the env reset of a rollout (leave-one-out REINFORCE groups prompts)."""
        return None

    @property
    def uses_kl_penalty(self) -> bool:
        """Whether a KL term is on (``kl_coef > 0``, or an adaptive target that may raise it)."""
        return self.kl.coef > 0 or self.kl.target is not None

    def ensure_reference_policy(self) -> None:
        """Freeze a copy of the policy as the KL reference if a KL term is on and none exists yet.

        Called wherever training starts (:meth:`learn`, other loops such as :class:`agents.IRL`) and again by
        :meth:`penalised_rewards`, which runs before an update's first gradient step: so the reference is
        the policy as it was before this algorithm changed it, whoever drives the updates."""
        if self.reference_policy is None and self.uses_kl_penalty:
            self.reference_policy = self.policy.frozen_copy()

    def penalised_rewards(self, batch: PaddedTrajectories) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rewards - beta * kl, kl)``, each ``[N, T]``; kl is log pi_old - log pi_ref per token.

        ``batch``: :meth:`Trajectories.unpack` of the rollout."""
        if not self.uses_kl_penalty:
            # No leash: the reference policy's forward pass would be multiplied by 0, so skip it.
            return batch.rewards, torch.zeros_like(batch.rewards)
        self.ensure_reference_policy()
        with torch.no_grad():
            ref = self.evaluate_rollout(batch, self.reference_policy)
        kl = (batch.log_probs - ref.log_probs) * batch.mask
        return batch.rewards - self.kl.coef * kl, kl

    def evaluate_episodes(
        self,
        batch: PaddedTrajectories,
        rows: torch.Tensor,
        lengths: np.ndarray,
        prompt_lengths: torch.Tensor,
        policy: Policy | None = None,
    ) -> tuple[SequenceScores, torch.Tensor]:
        """Score the episodes ``rows`` of ``batch`` with ``policy`` (default: the one being trained).

        Causal attention makes each row's outputs independent of the other rows and of the padding after
        it, so rows sorted by length may be scored by a few passes of different widths (:func:`length_groups`)
        instead of one padded to the longest: the same numbers for fewer positions.

        :param lengths: the rows' lengths on the host (``batch.lengths[rows]``, read once by the caller).
        :param prompt_lengths: ``[N]``, of every episode of ``batch``.
        :return: ``(scores, rows)``: the same episodes, possibly reordered, and their scores ``[B, W]`` (W:
            their longest episode) in that order; ``batch``'s tensors align with them as ``x[rows, :W]``.
        """
        policy = policy or self.policy
        order = np.argsort(lengths, kind="stable")
        sorted_lengths = lengths[order]
        groups = length_groups(
            sorted_lengths, batch.prompts.shape[1] + 1, GROUP_PASS_COST.get(self.device.type)
        )
        if len(groups) > 1:
            rows = rows[torch.as_tensor(order, device=rows.device)]  # shortest first
        parts = [
            policy.evaluate_sequences(
                batch.prompts[part], batch.tokens[part, :width], batch.lengths[part], prompt_lengths[part]
            )
            for part, width in ((rows[start:stop], width) for start, stop, width in groups)
        ]
        if len(parts) == 1:
            return parts[0], rows
        width = int(sorted_lengths[-1])

        def join(name: str) -> torch.Tensor:
            # Each group padded to the common width with zeros, the value of positions beyond an episode.
            return torch.cat([F.pad(getattr(p, name), (0, width - getattr(p, name).shape[1])) for p in parts])

        return SequenceScores(join("log_probs"), join("entropy"), join("values")), rows

    def evaluate_rollout(self, batch: PaddedTrajectories, policy: Policy | None = None) -> SequenceScores:
        """:meth:`evaluate_episodes` of every episode, ``[N, T]`` in the rollout's order."""
        every = torch.arange(batch.lengths.shape[0], device=self.device)
        prompt_lengths = self.policy.prompt_lengths(batch.prompts)
        scores, rows = self.evaluate_episodes(
            batch, every, batch.lengths.cpu().numpy(), prompt_lengths, policy
        )
        back = torch.argsort(rows)  # rows is a permutation of every
        return SequenceScores(scores.log_probs[back], scores.entropy[back], scores.values[back])

    # ------------------------------------------------------------------ the SB3 surface

    def train(self, traj: Trajectories) -> dict[str, float]:
        """One update from ``traj``; returns the quantities to log."""
        raise NotImplementedError

    def _check_finite(self, **quantities: torch.Tensor) -> None:
        """Raise FloatingPointError naming the first of the scalar ``quantities`` that is not finite.

        One host read for all of them: a read per quantity would stall a GPU several times per minibatch."""
        values = torch.stack([value.detach().float().reshape(()) for value in quantities.values()])
        if bool(torch.isfinite(values).all()):
            return
        for name, value in quantities.items():
            if not bool(torch.isfinite(value)):
                raise FloatingPointError(
                    f"{name} is not finite ({float(value.detach())}) at update {self._n_updates + 1}; "
                    "lower the learning rate or check the reward"
                )

    def _entropy_bonus(self, entropy: torch.Tensor) -> torch.Tensor:
        """``ent_coef * entropy`` for the loss; with ``ent_coef == 0`` a constant 0, so that the backward
        pass skips the entropy's graph over ``[B, T, V]`` (~2% of an update at 400 ids, more at 50k)."""
        return self.ent_coef * entropy if self.ent_coef else entropy.new_zeros(())

    def _gradient_step(self, objective: torch.Tensor, **checks: torch.Tensor) -> torch.Tensor:
        """Backward, clip and step; ``checks`` (e.g. the loss terms) and the gradient norm must be finite
        before the optimizer steps (checked with one host read). Returns the gradient norm (a tensor)."""
        self.optimizer.zero_grad(set_to_none=True)
        objective.backward()
        # The optimizer's parameters are the policy's (the same tensors, in order), listed once rather than
        # walked through the module tree at every step; foreach on every device: one norm kernel and one
        # scale over all gradients instead of a pair per tensor (torch picks foreach by itself on CUDA only).
        parameters = [p for group in self.optimizer.param_groups for p in group["params"]]
        norm = torch.nn.utils.clip_grad_norm_(parameters, self.max_grad_norm, foreach=True)
        self._check_finite(**checks, grad_norm=norm)
        self.optimizer.step()
        return norm

    def _require_env(self, what: str) -> None:
        if self.env is None:
            raise RuntimeError(
                f"{type(self).__name__}.{what} needs an environment: this model has none (loaded without "
                "env= or built with env=None), so it can predict only; call set_env(env) first"
            )

    def learn(
        self,
        total_timesteps: int,
        callback: Any = None,
        log_interval: int = 1,
        tb_log_name: str | None = None,
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> TextRLAlgorithm:
        """Collect rollouts of ``n_envs`` episodes and update until ``total_timesteps`` env steps (tokens).

        Stable-Baselines3's keywords, with its meanings:

        :param callback: an SB3 callback, a list of them, or a function ``(locals, globals) -> bool``; its
            ``on_step`` runs once per rollout (returning False stops training).
        :param log_interval: log (and dump) every this many updates (0: never).
        :param tb_log_name: the TensorBoard run folder's name, ``{tensorboard_log}/{tb_log_name}_{n}``
            (default: the algorithm's class name, e.g. ``"PPO"``).
        :param reset_num_timesteps: start counting timesteps (and a new TensorBoard run) from 0; False
            continues both, e.g. after :meth:`load`.
        :param progress_bar: show a progress bar over the timesteps.
        """
        if isinstance(total_timesteps, bool) or not isinstance(total_timesteps, int) or total_timesteps <= 0:
            raise ValueError(f"total_timesteps must be a positive integer, got {total_timesteps!r}")
        self._require_env("learn")
        # A new logger per learn only where it has a run folder to pick (each SB3 configure also makes a
        # temporary folder, which a stdout-only logger does not need anew).
        if not self._custom_logger and (self._logger is None or self.tensorboard_log is not None):
            self._logger = self._configure_logger(tb_log_name or type(self).__name__, reset_num_timesteps)
        if reset_num_timesteps:
            self.num_timesteps = 0
        target = self.num_timesteps + total_timesteps if not reset_num_timesteps else total_timesteps
        self.ensure_reference_policy()
        callback = self._init_callback(callback)
        callback.on_training_start(locals(), globals())
        bar = tqdm(total=total_timesteps, desc=type(self).__name__, disable=not progress_bar)
        iteration = 0
        while self.num_timesteps < target:
            started = time.perf_counter()
            callback.on_rollout_start()
            traj = self.collect_rollout()
            self.num_timesteps += traj.num_steps
            bar.update(traj.num_steps)
            returns = traj.episode_returns()
            self.ep_info_buffer = (self.ep_info_buffer + returns.tolist())[-100:]
            callback.update_locals(locals())
            keep_going = callback.on_step()
            callback.on_rollout_end()
            if keep_going is False:
                break
            stats = self.train(traj)
            self._n_updates += 1
            iteration += 1
            if log_interval and iteration % log_interval == 0:
                self._log(traj, stats, time.perf_counter() - started)
        bar.close()
        callback.on_training_end()
        return self

    def _init_callback(self, callback: Any) -> BaseCallback:
        if callback is None:
            callback = CallbackList([])
        elif isinstance(callback, list):
            callback = CallbackList(callback)
        elif not isinstance(callback, BaseCallback):
            callback = ConvertCallback(callback)
        callback.init_callback(self)
        return callback

    def _log(self, traj: Trajectories, stats: dict[str, float], seconds: float) -> None:
        log = self.logger
        log.record("rollout/ep_rew_mean", float(np.mean(self.ep_info_buffer)))
        log.record("rollout/ep_len_mean", float(traj.lengths.float().mean()))
        log.record("time/total_timesteps", self.num_timesteps)
        log.record("time/tokens_per_s", traj.num_steps / max(seconds, 1e-9))
        log.record("train/n_updates", self._n_updates)
        log.record("train/kl_coef", self.kl.coef)
        for key, value in stats.items():
            log.record(f"train/{key}", value)
        log.dump(self.num_timesteps)

    def predict(
        self,
        observation: dict[str, np.ndarray],
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, None]:
        """Next token for one observation (``prompt_ids [P]``) or a batch (``[B, P]``): ``(actions, None)``."""
        single = np.asarray(observation["prompt_ids"]).ndim == 1
        obs = {k: torch.as_tensor(np.asarray(v), device=self.device) for k, v in observation.items()}
        if single:
            obs = {k: v[None] for k, v in obs.items()}
        with torch.no_grad():
            logits, _ = self.policy(obs)
            if deterministic:
                actions = logits.argmax(-1)
            else:
                uniforms = torch.rand(logits.shape[0], generator=self.generator, device=self.device)
                actions = sample_logits(logits, uniforms)
        actions = actions.cpu().numpy()
        return (actions[0] if single else actions), None

    # ------------------------------------------------------------------ checkpoints

    def _constructor_arguments(self) -> dict[str, Any]:
        common = {
            "learning_rate": self.learning_rate,
            "n_envs": self.n_envs,
            "gamma": self.gamma,
            "ent_coef": self.ent_coef,
            "vf_coef": self.vf_coef,
            "max_grad_norm": self.max_grad_norm,
            "value_trunk_gradient": self.value_trunk_gradient,
            "kl_coef": self.kl.coef,
            "target_kl_penalty": self.kl.target,
            "seed": self.seed,
            "verbose": self.verbose,
            "tensorboard_log": self.tensorboard_log,
        }
        return common | {name: getattr(self, name) for name in self._hyperparameters}

    def save(self, path: str | os.PathLike) -> None:
        """Write a zip (policy checkpoint, hyper-parameters, optimizer, reference policy, RNG and env
        states) atomically, so that ``load`` + ``learn`` continues exactly as if training never stopped.

        The policy is written by its own ``save`` under the name its kind registers
        (:mod:`agents.policies.registry`): a file (``policy.pt``) or a folder (``policy/...``) in the zip."""
        path = Path(path)
        kind = policy_kind_of(self.policy)
        state = {
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "sampling": {"seed": self._sampling_seed, "rollouts": self._n_rollouts},
            "rng": self.rng.bit_generator.state,
            "num_timesteps": self.num_timesteps,
            "n_updates": self._n_updates,
            "kl_coef": self.kl.coef,
            **self._env_state(),
            "reference_state": None if self.reference_policy is None else self.reference_policy.state_dict(),
            "ep_info_buffer": list(self.ep_info_buffer),
            "attributes": {name: getattr(self, name) for name in self._state_attributes},
            "extra": self._extra_state(),
        }
        raw_state = io.BytesIO()
        torch.save(state, raw_state)
        meta = {
            "format": ALGORITHM_FORMAT,
            "algorithm": type(self).__name__,
            "policy": {"kind": kind.name, "path": kind.checkpoint_name},
            "arguments": self._constructor_arguments(),
        }
        with tempfile.TemporaryDirectory() as folder:
            written = Path(folder) / kind.checkpoint_name
            self.policy.save(written)
            files = [written] if written.is_file() else sorted(f for f in written.rglob("*") if f.is_file())
            with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w") as archive:
                archive.writestr("algorithm.json", json.dumps(meta))
                for file in files:
                    archive.write(file, file.relative_to(folder).as_posix())
                archive.writestr("state.pt", raw_state.getvalue())

    def _env_state(self) -> dict[str, Any]:
        """Where the env's example sequence stands (what a resumed run needs to draw the same episodes)."""
        if self.env is None:  # loaded without env and never given one: pass the saved state on
            return dict(self._saved_env_state or {"env_seed_keys": None, "env_episode_counts": None})
        return {
            "env_seed_keys": None if self.env._seed_keys is None else self.env._seed_keys.tolist(),
            "env_episode_counts": self.env._episode_counts.tolist(),
            "env_seeded": self._env_seeded,
        }

    def _restore_env_state(self, state: dict[str, Any]) -> None:
        if state.get("env_episode_counts") is None:  # saved without an env: nothing to restore
            return
        if state["env_seed_keys"] is not None:
            self.env._seed_keys = np.array(state["env_seed_keys"], dtype=np.uint64)
        self.env._episode_counts = np.array(state["env_episode_counts"], dtype=np.uint64)
        self._env_seeded = state["env_seeded"]

    @classmethod
    def load(
        cls, path: str | os.PathLike, env: Any = None, device: str | torch.device = "auto"
    ) -> TextRLAlgorithm:
        """Load what :meth:`save` wrote (also round 1's zips).

        :param env: train on this env (an id or env object matching the policy). Without it the model can
            :meth:`predict`; :meth:`learn` then asks for :meth:`set_env` first, which resumes the saved env's
            example sequence as ``load(path, env=env)`` would.
        :param device: where the policy goes (``"auto"``: CUDA when present).
        """
        path = Path(path)
        try:
            with zipfile.ZipFile(path) as archive:
                meta = json.loads(archive.read("algorithm.json"))
                state = torch.load(
                    io.BytesIO(archive.read("state.pt")), map_location="cpu", weights_only=True
                )
                if meta.get("format") not in READABLE_FORMATS or meta.get("algorithm") != cls.__name__:
                    raise ValueError(
                        f"{path} holds a {meta.get('algorithm')!r} checkpoint, not {cls.__name__}"
                    )
                # Round-1 zips hold a TransformerPolicy file and no "policy" entry.
                policy_meta = meta.get("policy", {"kind": "transformer", "path": "policy.pt"})
                name = policy_meta["path"]
                members = [m for m in archive.namelist() if m == name or m.startswith(f"{name}/")]
                if not members:
                    raise KeyError(f"there is no item named {name!r} in the archive")
                with tempfile.TemporaryDirectory() as folder:
                    for member in members:
                        archive.extract(member, folder)
                    policy = load_policy(
                        policy_meta["kind"], Path(folder) / name, env=env, device=resolve_device(device)
                    )
        except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError, RuntimeError) as err:
            raise ValueError(f"{path} is not a readable {cls.__name__} checkpoint: {err}") from err
        arguments = dict(meta["arguments"])
        # Checked when training starts instead: a model loaded to predict needs no TensorBoard.
        tensorboard_log = arguments.pop("tensorboard_log", None)
        model = cls(policy, env, **arguments)
        model.tensorboard_log = tensorboard_log
        model.optimizer.load_state_dict(state["optimizer"])
        model.generator.set_state(state["generator"])
        # Checkpoints from before keyed sampling resume with the seed's own key and a fresh count.
        sampling = state.get("sampling", {"seed": model._sampling_seed, "rollouts": 0})
        model._sampling_seed, model._n_rollouts = sampling["seed"], sampling["rollouts"]
        model.rng.bit_generator.state = state["rng"]
        model.num_timesteps = state["num_timesteps"]
        model._n_updates = state["n_updates"]
        model.kl.coef = state["kl_coef"]
        env_state = {key: state.get(key) for key in ("env_seed_keys", "env_episode_counts", "env_seeded")}
        if env is None:
            model._saved_env_state = env_state
        else:
            model._restore_env_state(env_state)
        # Absent from checkpoints written before it was saved: those resume with an empty buffer.
        model.ep_info_buffer = list(state.get("ep_info_buffer", []))
        for name, value in state["attributes"].items():
            setattr(model, name, value)
        reference_state = state.get("reference_state")
        if reference_state is None and state.get("reference") is not None:
            # Round 1 stored the reference TransformerPolicy's TransformerLM weights (its ``model``).
            reference_state = {f"model.{key}": value for key, value in state["reference"].items()}
        if reference_state is not None:
            reference = policy.frozen_copy()
            reference.load_state_dict(reference_state)
            model.reference_policy = reference
        # Absent from checkpoints written before the hook: {} (what the default _extra_state writes).
        model._load_extra_state(state.get("extra", {}))
        return model

    def _extra_state(self) -> dict[str, Any]:
        """Learned state a subclass must checkpoint beyond the weights, the optimizer, the KL reference and
        ``_state_attributes`` (plain values), e.g. another network's ``state_dict()``. It must be what
        ``torch.load(weights_only=True)`` reads back: tensors, numbers, strings, None, lists, dicts.
        Override with :meth:`_load_extra_state`; the default keeps nothing."""
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`_extra_state` returned (tensors on the CPU). :meth:`load` calls it last, on
        the built model: policy, optimizer, reference and ``_state_attributes`` are in place."""
