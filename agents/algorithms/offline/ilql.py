"""Implicit Language Q-Learning (ILQL; Snell et al. 2022, "Offline RL for Natural Language Generation with
Implicit Language Q Learning").

Token-level offline RL on the policy's own trunk: twin Q heads ``Q_1, Q_2: h_t -> [V]`` (one value per
next token), a V head ``h_t -> []``, and slowly moving (Polyak) copies of the Q heads as targets. The
language model itself keeps learning the data by maximum likelihood (behaviour cloning, ``pi_beta``), and
acting reweights it by the learned values::

    logits'(s) = logits_beta(s) + q_beta * min(Q'_1(s, .), Q'_2(s, .))

(Q' the target heads; adding ``- q_beta * V(s)`` would change no probability). The losses, per token t of
an episode of length L, with ``h_t`` the trunk's hidden state before action ``a_t``::

    y_t       = r_t + gamma * V(s_{t+1})           (V(s_L) = 0: every episode end is terminal)
    L_Q       = sum_i (Q_i(s_t, a_t) - y_t)^2       (y_t detached)
    L_V       = |tau - 1[u < 0]| * u^2,  u = min_i Q'_i(s_t, a_t) - V(s_t)   (expectile regression, IQL)
    L_CQL     = sum_i logsumexp_a Q_i(s_t, a) - Q_i(s_t, a_t)                (over the ids a policy may take)
    L_BC      = -log pi_beta(a_t | s_t)
    L         = bc_coef * L_BC + L_Q + L_V + cql_weight * L_CQL     (means over the batch's tokens)

after which ``Q'_i <- (1 - polyak_alpha) Q'_i + polyak_alpha Q_i``. All heads read the same trunk, which
every loss trains (the targets are applied to it without gradient).

The trained model's policy is an :class:`ILQLPolicy`: the original policy (``.base``) plus the heads, a
full :class:`~agents.policies.base.Policy` whose ``start`` / ``step`` / ``feed`` return the Q-adjusted
logits. So ``model.predict``, :func:`agents.evaluate` (``evaluate(model.policy, env)``), decoding and
rollouts with ``model.policy`` all act as ILQL acts; ``model.policy.base`` is the behaviour-cloned LM alone.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from agents.algorithms.advantages import masked_mean
from agents.algorithms.offline.base import OfflineAlgorithm
from agents.devices import resolve_device
from agents.policies.base import Policy, SequenceScores, check_policy, score_actions
from agents.policies.registry import load_policy, policy_kind_of
from agents.rollout import PaddedTrajectories
from lmrl_gym.atomic_file import atomic_directory

ILQL_POLICY_FORMAT = "lmrl_gym.ILQLPolicy/1"
ILQL_POLICY_FILE = "ilql_policy.json"
HEADS_FILE = "heads.pt"


# ---------------------------------------------------------------------------------------------- the maths


def expectile_loss(diff: torch.Tensor, tau: float) -> torch.Tensor:
    """Elementwise asymmetric square ``|tau - 1[diff < 0]| * diff^2`` (IQL, Kostrikov et al. 2021): its
    minimiser over V of ``E[loss(Q - V)]`` is the tau-expectile of Q (the mean at tau = 0.5, towards the
    maximum as tau -> 1). ``diff``: ``Q - V``, any shape."""
    weight = torch.where(diff < 0, 1.0 - tau, tau)
    return weight * diff.square()


def td_targets(
    rewards: torch.Tensor, next_values: torch.Tensor, mask: torch.Tensor, gamma: float
) -> torch.Tensor:
    """``[B, T]`` Q targets ``r_t + gamma * V(s_{t+1})``, with ``V(s_L) = 0`` after an episode's last action.

    :param rewards: / :param mask: ``[B, T]`` (mask True for t < length).
    :param next_values: ``[B, T]`` V(s_t) of each position (shifted here by one).
    """
    after = torch.zeros_like(next_values[:, :1])
    shifted = torch.cat([next_values[:, 1:], after], dim=1)
    has_next = torch.cat([mask[:, 1:], torch.zeros_like(mask[:, :1])], dim=1)
    return rewards + gamma * torch.where(has_next, shifted, 0.0)


def cql_loss(q_all: torch.Tensor, actions: torch.Tensor, invalid_ids_mask: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` conservative Q term ``logsumexp_a Q(s, a) - Q(s, a_t)`` (Kumar et al. 2020, in ILQL's form:
    the cross-entropy of the data's action under softmax(Q)). It pushes down the values of actions the data
    did not take. Ids a policy can never take (``invalid_ids_mask [V]``) are left out of the sum.

    :param q_all: ``[B, T, V]``; :param actions: long ``[B, T]`` inside ``[0, V)``.
    """
    masked = q_all.masked_fill(invalid_ids_mask, float("-inf"))
    taken = q_all.gather(-1, actions[..., None]).squeeze(-1)
    return torch.logsumexp(masked, dim=-1) - taken


@torch.no_grad()
def polyak_update(target: nn.Module, online: nn.Module, alpha: float) -> None:
    """``target <- (1 - alpha) * target + alpha * online``, parameter by parameter (one fused op)."""
    torch._foreach_lerp_(list(target.parameters()), list(online.parameters()), alpha)


# ---------------------------------------------------------------------------------------------- heads


def _head(hidden_size: int, out: int, inner: int) -> nn.Module:
    """A two-layer MLP ``[..., H] -> [..., out]`` (``inner`` 0: one linear layer), last layer zeroed so that
    a new head outputs 0 everywhere (ILQL then starts acting exactly as the behaviour-cloned LM)."""
    if inner == 0:
        layers = [nn.Linear(hidden_size, out)]
    else:
        layers = [nn.Linear(hidden_size, inner), nn.ReLU(), nn.Linear(inner, out)]
    nn.init.zeros_(layers[-1].weight)
    nn.init.zeros_(layers[-1].bias)
    return nn.Sequential(*layers)


class ILQLHeads(nn.Module):
    """Twin Q heads (``[..., H] -> [..., V]``), their Polyak targets (frozen, updated by
    :func:`polyak_update`) and a V head (``[..., H] -> [...]``), all on the trunk's hidden states.

    :param hidden_size: H, the trunk's width; :param vocab_size: V, the policy's logits per step.
    :param head_hidden: width of each head's hidden layer (None: 2 H; 0: linear heads).
    """

    def __init__(self, hidden_size: int, vocab_size: int, head_hidden: int | None = None) -> None:
        super().__init__()
        inner = 2 * hidden_size if head_hidden is None else int(head_hidden)
        self.config = {"hidden_size": int(hidden_size), "vocab_size": int(vocab_size), "head_hidden": inner}
        self.q1 = _head(hidden_size, vocab_size, inner)
        self.q2 = _head(hidden_size, vocab_size, inner)
        self.v = _head(hidden_size, 1, inner)
        self.target_q1 = copy.deepcopy(self.q1).requires_grad_(False)
        self.target_q2 = copy.deepcopy(self.q2).requires_grad_(False)

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(Q_1, Q_2, V)``: ``[..., V]``, ``[..., V]``, ``[...]`` from hidden states ``[..., H]``."""
        return self.q1(hidden), self.q2(hidden), self.v(hidden).squeeze(-1)

    def target_q(self, hidden: torch.Tensor) -> torch.Tensor:
        """``min(Q'_1, Q'_2)`` ``[..., V]``: the pessimistic target value of every next token."""
        return torch.minimum(self.target_q1(hidden), self.target_q2(hidden))


# ---------------------------------------------------------------------------------------------- the policy


@dataclass
class ILQLDecodingState:
    """The base policy's decoding state plus the trunk's hidden state ``[B, H]`` of each row's current
    state (what the Q heads read); ``values`` are the base policy's (its value head's)."""

    inner: Any
    hidden: torch.Tensor

    @property
    def values(self) -> torch.Tensor:
        return self.inner.values


class ILQLPolicy(nn.Module):
    """A policy acting as ILQL acts: ``logits + q_beta * min(Q'_1, Q'_2)`` from the heads on its trunk.

    A full :class:`~agents.policies.base.Policy`: decoding (``start`` / ``step`` / ``feed`` / ``reorder`` /
    ``select``), :meth:`forward` (``predict``), :meth:`sequence_logits` and :meth:`evaluate_sequences` give
    the adjusted distribution, so evaluation, decoding, rollouts and scoring with it see ILQL's policy.
    :meth:`log_likelihood` (the maximum-likelihood objective) and :meth:`hidden_states` stay the base
    language model's, ``pi_beta``; values are the base policy's value head's.

    At decode time the trunk's hidden state is read where the protocol defines it: the input of the base
    policy's ``value_head`` (``V(s_t) = value_head(h_t)``), captured by a forward hook during each call,
    so decoding costs the Q heads only (no second pass). :meth:`start` checks that the captured state
    reproduces the policy's values and says so if a policy computes them another way.

    Saved as a folder (policy kind ``"ilql"``): the base policy's own checkpoint, ``heads.pt`` and
    ``ilql_policy.json``.

    :param base: the policy whose trunk the heads read (trained in place by :class:`ILQL`).
    :param heads: the :class:`ILQLHeads` (moved to the base policy's device).
    :param q_beta: the weight of the Q values in the logits (ILQL's beta; 0: act as the base policy).
    """

    def __init__(self, base: Policy, heads: ILQLHeads, q_beta: float = 1.0) -> None:
        super().__init__()
        check_policy(base)
        self.base = base
        self.heads = heads.to(base.device)
        self.q_beta = float(q_beta)
        invalid = torch.zeros(base.vocab_size, dtype=torch.bool, device=base.device)
        invalid[list(base.invalid_ids)] = True
        self.register_buffer("invalid_ids_mask", invalid, persistent=False)

    # ------------------------------------------------------------------ what the base policy says

    @property
    def tokenizer(self) -> Any:
        return self.base.tokenizer

    @property
    def max_prompt_tokens(self) -> int:
        return self.base.max_prompt_tokens

    @max_prompt_tokens.setter
    def max_prompt_tokens(self, value: int) -> None:
        self.base.max_prompt_tokens = value

    @property
    def max_new_tokens(self) -> int:
        return self.base.max_new_tokens

    @max_new_tokens.setter
    def max_new_tokens(self, value: int) -> None:
        self.base.max_new_tokens = value

    @property
    def vocab_size(self) -> int:
        return self.base.vocab_size

    @property
    def device(self) -> torch.device:
        return self.base.device

    @property
    def invalid_ids(self) -> tuple[int, ...]:
        return self.base.invalid_ids

    @property
    def value_head(self) -> nn.Module:
        return self.base.value_head

    def prompt_lengths(self, prompt_ids: torch.Tensor) -> torch.Tensor:
        return self.base.prompt_lengths(prompt_ids)

    def check_env(self, env: Any) -> None:
        self.base.check_env(env)

    def hidden_states(self, prompt_ids, tokens, lengths, prompt_lengths=None) -> torch.Tensor:
        """The base policy's (the heads' input)."""
        return self.base.hidden_states(prompt_ids, tokens, lengths, prompt_lengths)

    def sequence_logits(
        self, prompt_ids, tokens, lengths, prompt_lengths=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Q-adjusted next-token logits ``[B, T, V]`` of whole episodes (the distribution ILQL acts from) and
        the base policy's values ``[B, T]``: the base policy's pass and one more for the hidden states."""
        logits, values = self.base.sequence_logits(prompt_ids, tokens, lengths, prompt_lengths)
        hidden = self.base.hidden_states(prompt_ids, tokens, lengths, prompt_lengths)
        return logits + self.q_adjustment(hidden), values

    def evaluate_sequences(
        self, prompt_ids, tokens, lengths, prompt_lengths=None, agent_mask=None
    ) -> SequenceScores:
        """Log-probabilities and entropies of the Q-adjusted distribution (how this policy acts), the base
        policy's values; ``[B, T]`` each, from :meth:`sequence_logits`."""
        logits, values = self.sequence_logits(prompt_ids, tokens, lengths, prompt_lengths)
        tokens = torch.as_tensor(tokens, device=self.device).long()
        t = tokens.shape[1]
        scored = (
            torch.arange(t, device=self.device)[None, :]
            < torch.as_tensor(lengths, device=self.device)[:, None]
        )
        if agent_mask is not None:
            scored = scored & torch.as_tensor(agent_mask, device=self.device).bool()
        actions = torch.where(scored, tokens, self.tokenizer.eos_id)  # padding must not index a -inf logit
        return score_actions(logits, actions, values, scored, self.invalid_ids_mask)

    def log_likelihood(self, prompt_ids, tokens, lengths, prompt_lengths=None) -> torch.Tensor:
        """The base language model's (``pi_beta``): the behaviour-cloning objective."""
        return self.base.log_likelihood(prompt_ids, tokens, lengths, prompt_lengths)

    # ------------------------------------------------------------------ acting

    def q_adjustment(self, hidden: torch.Tensor) -> torch.Tensor:
        """``q_beta * min(Q'_1, Q'_2)`` ``[..., V]`` from hidden states ``[..., H]``."""
        return self.q_beta * self.heads.target_q(hidden.float())

    @contextlib.contextmanager
    def _reading_hidden(self) -> Iterator[list[torch.Tensor]]:
        """Collect the inputs of the base policy's value head during the block."""
        seen: list[torch.Tensor] = []
        handle = self.base.value_head.register_forward_hook(lambda module, args, out: seen.append(args[0]))
        try:
            yield seen
        finally:
            handle.remove()

    @staticmethod
    def _last(hidden: torch.Tensor) -> torch.Tensor:
        # [B, K, H] (a pass over K new positions) -> the last one's [B, H]; [B, H] stays.
        return hidden[:, -1] if hidden.dim() == 3 else hidden

    def start(
        self, prompt_ids, prompt_lengths=None, max_new_tokens=None
    ) -> tuple[torch.Tensor, ILQLDecodingState]:
        """The base policy's ``start`` with Q-adjusted logits ``[B, V]``."""
        with self._reading_hidden() as seen:
            logits, inner = self.base.start(prompt_ids, prompt_lengths, max_new_tokens)
        if not seen or self._last(seen[-1]).shape[0] != logits.shape[0]:
            raise RuntimeError(
                f"ILQLPolicy reads the trunk's hidden state at decode time from the input of the policy's "
                f"value_head, but {type(self.base).__name__}.start did not call value_head on the current "
                "states; such a policy cannot act with ILQL's heads"
            )
        raw = self._last(seen[-1])
        with torch.no_grad():
            check = self.base.value_head(raw).squeeze(-1).float()
        if not torch.allclose(check, inner.values.float(), atol=1e-4, rtol=1e-3):
            raise RuntimeError(
                f"the value_head input {type(self.base).__name__}.start computed is not its current states' "
                "hidden state (value_head(h) differs from the state's values); ILQLPolicy cannot read them"
            )
        hidden = raw.float()
        return logits + self.q_adjustment(hidden), ILQLDecodingState(inner, hidden)

    def step(self, state: ILQLDecodingState, tokens: torch.Tensor) -> tuple[torch.Tensor, ILQLDecodingState]:
        """The base policy's ``step`` with Q-adjusted logits ``[B, V]``."""
        with self._reading_hidden() as seen:
            logits, inner = self.base.step(state.inner, tokens)
        hidden = self._last(seen[-1]).float()
        return logits + self.q_adjustment(hidden), ILQLDecodingState(inner, hidden)

    def feed(self, state: ILQLDecodingState, tokens, lengths) -> tuple[torch.Tensor, ILQLDecodingState]:
        """The base policy's ``feed`` with Q-adjusted logits; a row given no token keeps its state."""
        with self._reading_hidden() as seen:
            logits, inner = self.base.feed(state.inner, tokens, lengths)
        if seen:
            given = torch.as_tensor(lengths, device=self.device) > 0
            hidden = torch.where(given[:, None], self._last(seen[-1]).float(), state.hidden)
        else:  # nothing was read (every row given no token)
            hidden = state.hidden
        return logits + self.q_adjustment(hidden), ILQLDecodingState(inner, hidden)

    def reorder(self, state: ILQLDecodingState, index: torch.Tensor) -> ILQLDecodingState:
        index = torch.as_tensor(index, device=self.device).long()
        return ILQLDecodingState(self.base.reorder(state.inner, index), state.hidden.index_select(0, index))

    def select(self, state: ILQLDecodingState, rows: torch.Tensor) -> ILQLDecodingState:
        rows = torch.as_tensor(rows, device=self.device).long()
        return ILQLDecodingState(self.base.select(state.inner, rows), state.hidden.index_select(0, rows))

    def forward(self, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Q-adjusted next-token logits ``[B, V]`` and the base policy's values ``[B]`` from observations
        (``predict``): the base policy's forward, and one teacher-forced pass for the hidden state."""
        logits, values = self.base(obs)
        prompt_ids = torch.as_tensor(obs["prompt_ids"], device=self.device).long()
        prefix = torch.as_tensor(obs["prefix_ids"], device=self.device).long()
        lengths = (prefix != self.tokenizer.pad_id).sum(-1)
        rows = torch.arange(prefix.shape[0], device=self.device)
        # One more position after each prefix: the state s_t of the next action. Its token is never read.
        tokens = torch.cat([prefix, prefix[:, :1]], dim=1)
        tokens[rows, lengths] = self.tokenizer.eos_id
        hidden = self.base.hidden_states(prompt_ids, tokens, lengths + 1, self.prompt_lengths(prompt_ids))
        return logits + self.q_adjustment(hidden[rows, lengths]), values

    def frozen_copy(self) -> ILQLPolicy:
        """A frozen copy (eval mode, no gradients)."""
        return copy.deepcopy(self).eval().requires_grad_(False)

    # ------------------------------------------------------------------ checkpoints

    def save(self, path: str | os.PathLike) -> None:
        """Write a folder atomically: the base policy's checkpoint (under its kind's name), ``heads.pt``
        (online and target heads) and ``ilql_policy.json`` (format, base kind, head sizes, ``q_beta``)."""
        kind = policy_kind_of(self.base)
        meta = {
            "format": ILQL_POLICY_FORMAT,
            "base": {"kind": kind.name, "path": kind.checkpoint_name},
            "heads": self.heads.config,
            "q_beta": self.q_beta,
        }
        with atomic_directory(path) as tmp:
            self.base.save(tmp / kind.checkpoint_name)
            torch.save({k: v.detach().cpu() for k, v in self.heads.state_dict().items()}, tmp / HEADS_FILE)
            (tmp / ILQL_POLICY_FILE).write_text(json.dumps(meta), encoding="utf-8")

    @classmethod
    def load(
        cls, path: str | os.PathLike, env: Any = None, device: str | torch.device = "auto"
    ) -> ILQLPolicy:
        """Read what :meth:`save` wrote; with ``env``, check that it matches.

        :raises ValueError: a missing or damaged folder, or one of another kind."""
        path = Path(path)
        try:
            meta = json.loads((path / ILQL_POLICY_FILE).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path} is not a readable ILQLPolicy checkpoint: {err}") from err
        if meta.get("format") != ILQL_POLICY_FORMAT:
            raise ValueError(f"{path} is not an ILQLPolicy checkpoint (format {ILQL_POLICY_FORMAT!r})")
        base = load_policy(
            meta["base"]["kind"], path / meta["base"]["path"], env=env, device=resolve_device(device)
        )
        heads = ILQLHeads(**meta["heads"])
        try:
            heads.load_state_dict(torch.load(path / HEADS_FILE, map_location="cpu", weights_only=True))
        except (OSError, RuntimeError) as err:
            raise ValueError(f"{path} holds unreadable ILQL heads: {err}") from err
        return cls(base, heads, q_beta=meta["q_beta"])


def hidden_size_of(policy: Policy) -> int:
    """H, the width of the trunk's hidden states: the value head's input size, or one pass to measure it."""
    size = getattr(policy.value_head, "in_features", None)
    if isinstance(size, int):
        return size
    ids = torch.full((1, 1), policy.tokenizer.eos_id, dtype=torch.long, device=policy.device)
    with torch.no_grad():
        hidden = policy.hidden_states(ids, ids, torch.ones(1, dtype=torch.long, device=policy.device))
    return int(hidden.shape[-1])


# ---------------------------------------------------------------------------------------------- ILQL


class ILQL(OfflineAlgorithm):
    """Implicit Language Q-Learning (see the module doc for the losses and how it acts).

    ``model.policy`` is an :class:`ILQLPolicy` around the given policy (which is trained in place, and is
    ``model.policy.base``; a policy that is an :class:`ILQLPolicy` already, e.g. a loaded one, keeps its
    heads); ``model.predict`` and ``agents.evaluate(model.policy, env)`` use the Q-adjusted logits.
    ``num_timesteps`` counts gradient steps.

    :param q_beta: weight of ``min Q'`` in the acting logits (ILQL's beta, named ``q_beta`` here since
        ``beta`` is GRPO's KL weight); 0 acts as the behaviour-cloned LM. The Q values are in reward units
        and the logits' gaps in nats, so useful values grow as rewards shrink: 16 on the small copy task's
        [0, 1] BLEU reward (tests/test_offline.py).
    :param tau: the expectile of the V loss, in (0, 1) (IQL's and LMRL-Gym's ``tau``; not SB3's Polyak
        ``tau``, which is ``polyak_alpha`` here): 0.5 fits V to the mean of Q over the data's actions,
        towards 1 to the best of them. Default 0.7, IQL's (Kostrikov et al. 2021) on most of its tasks.
    :param gamma: discount of the Q targets (per token). Default 0.99.
    :param polyak_alpha: step of the target heads towards the online ones after each gradient step, in
        (0, 1]. Default 0.005.
    :param cql_weight: weight of the CQL term (0: off). Default 0.01.
    :param bc_coef: weight of the language model's behaviour-cloning loss (0: the trunk learns from the
        value losses only).
    :param head_hidden: width of each head's hidden layer (None: twice the trunk's; 0: linear heads).
    :param dataset: / :param batch_size: / :param learning_rate: and the rest: :class:`OfflineAlgorithm`.
    """

    _hyperparameters = ("batch_size", "q_beta", "tau", "polyak_alpha", "cql_weight", "bc_coef", "head_hidden")

    def __init__(
        self,
        policy: Any,
        env: Any,
        dataset: Any = None,
        q_beta: float = 1.0,
        tau: float = 0.7,
        gamma: float = 0.99,
        polyak_alpha: float = 0.005,
        cql_weight: float = 0.01,
        bc_coef: float = 1.0,
        head_hidden: int | None = None,
        **kwargs: Any,
    ) -> None:
        if not 0 < tau < 1:
            raise ValueError(f"tau must be in (0, 1), got {tau}")
        if not 0 < polyak_alpha <= 1:
            raise ValueError(f"polyak_alpha must be in (0, 1], got {polyak_alpha}")
        for name, value in (("q_beta", q_beta), ("cql_weight", cql_weight), ("bc_coef", bc_coef)):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if head_hidden is not None and (
            isinstance(head_hidden, bool) or not isinstance(head_hidden, int) or head_hidden < 0
        ):
            raise ValueError(f"head_hidden must be None or an integer >= 0, got {head_hidden!r}")
        super().__init__(policy, env, dataset=dataset, gamma=gamma, **kwargs)
        if not isinstance(self.policy, ILQLPolicy):
            # Drawn from their own generator: the heads do not depend on (or move) the global one's state.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0 if self.seed is None else self.seed)
                heads = ILQLHeads(hidden_size_of(self.policy), self.policy.vocab_size, head_hidden)
            self.policy = ILQLPolicy(self.policy, heads, q_beta)
        self.policy.q_beta = float(q_beta)
        self.head_hidden = head_hidden
        self.tau = float(tau)
        self.polyak_alpha = float(polyak_alpha)
        self.cql_weight = float(cql_weight)
        self.bc_coef = float(bc_coef)
        # The trunk and the online heads; the target heads move by Polyak averaging only.
        trainable = [p for p in self.policy.parameters() if p.requires_grad]
        fused = True if self.device.type in ("cpu", "cuda") else None
        self.optimizer = torch.optim.AdamW(trainable, lr=self.learning_rate, weight_decay=0.0, fused=fused)

    @property
    def q_beta(self) -> float:
        """The policy's ``q_beta`` (how it acts); settable, e.g. to try another after training."""
        return self.policy.q_beta

    @q_beta.setter
    def q_beta(self, value: float) -> None:
        if not value >= 0:
            raise ValueError(f"q_beta must be >= 0, got {value}")
        self.policy.q_beta = float(value)

    def loss(self, batch: PaddedTrajectories) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        base, heads, mask = self.policy.base, self.policy.heads, batch.mask
        prompt_lengths = base.prompt_lengths(batch.prompts)
        actions = torch.where(mask, batch.tokens, 0).long()  # padding gathers id 0, then is masked out
        n_tokens = mask.sum().clamp(min=1)

        # Behaviour cloning of the data by the language model (pi_beta).
        log_likelihood = base.log_likelihood(batch.prompts, batch.tokens, batch.lengths, prompt_lengths)
        bc_loss = -log_likelihood.sum() / n_tokens

        hidden = base.hidden_states(batch.prompts, batch.tokens, batch.lengths, prompt_lengths)
        q1_all, q2_all, v = heads(hidden)
        q1 = q1_all.gather(-1, actions[..., None]).squeeze(-1)
        q2 = q2_all.gather(-1, actions[..., None]).squeeze(-1)
        with torch.no_grad():
            target_q = heads.target_q(hidden).gather(-1, actions[..., None]).squeeze(-1)
            y = td_targets(batch.rewards, v, mask, self.gamma)

        q_loss = masked_mean(torch.where(mask, (q1 - y).square() + (q2 - y).square(), 0.0), mask)
        value_loss = masked_mean(torch.where(mask, expectile_loss(target_q - v, self.tau), 0.0), mask)
        invalid = self.policy.invalid_ids_mask
        cql = torch.where(mask, cql_loss(q1_all, actions, invalid) + cql_loss(q2_all, actions, invalid), 0.0)
        cql_term = masked_mean(cql, mask)

        loss = self.bc_coef * bc_loss + q_loss + value_loss + self.cql_weight * cql_term
        terms = {
            "bc_loss": bc_loss,
            "q_loss": q_loss,
            "value_loss": value_loss,
            "cql_loss": cql_term,
            "loss": loss,
        }
        return loss, terms

    def after_step(self) -> None:
        heads = self.policy.heads
        polyak_update(heads.target_q1, heads.q1, self.polyak_alpha)
        polyak_update(heads.target_q2, heads.q2, self.polyak_alpha)
