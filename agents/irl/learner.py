"""Inverse RL for text: learn a per-token reward from expert demonstrations, and a policy on it.

Maximum-entropy IRL for sequences in the style of guided cost learning (Finn et al. 2016) and its text
version (Shi et al. 2018, "Toward Diverse Text Generation with Inverse Reinforcement Learning"). The
expert distribution is modelled as ``p(tau) ∝ exp(R(tau))`` with ``R(tau) = sum_t r(s_t, a_t)`` (a
:class:`lmrl_gym.rewards.RewardNetwork`). Each iteration:

1. the policy q samples a rollout of ``n_envs`` episodes (batched, KV-cached);
2. **reward update**: the max-ent log-likelihood of the demonstrations, with the partition function
   estimated by importance sampling from the policy samples::

       L(r) = -[ mean_demos R(tau_E) - log Z ] + l2 * mean(r^2),
       log Z = log mean_j exp( R(tau_j) - log q(tau_j) )

   over background samples j = the policy's samples and the batch of demonstrations (as guided cost
   learning does: it keeps the loss bounded); its gradient weights each sample by
   softmax_j(R(tau_j) - log q(tau_j));

   or, with ``loss="airl"``, AIRL's discriminator (Fu et al. 2018) on every token, logit
   ``r(s, a) - log pi(a|s)``, demonstrations labelled 1 and samples 0;
3. **policy update**: one update of this project's PPO (or REINFORCE) on the entropy-regularised
   reward ``r(s_t, a_t) - alpha * log pi(a_t|s_t)``, whose optimum is ``pi(tau) ∝ exp(R(tau) / alpha)``;
   with alpha = 1 that is the expert model itself, so the sampler keeps tracking what the reward says.

The reward of a rollout is re-scored with the freshly updated network in one batched forward pass, so the
environment itself pays nothing during IRL (its own reward is ignored).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from stable_baselines3.common.logger import Logger, configure
from tqdm.auto import tqdm

from agents.algorithms import PPO, REINFORCE
from agents.algorithms.advantages import masked_mean
from agents.policies.base import Policy, env_setup_of
from lmrl_gym.env_setup import EnvSetup
from lmrl_gym.rewards import Reward, RewardBatch, RewardNetwork
from lmrl_gym.rewards.learned import check_same_vocabulary
from lmrl_gym.tasks.base import Example
from lmrl_gym.vector_env import TextGenVectorEnv

IRL_LOSSES = ("maxent", "airl")
POLICY_ALGORITHMS = {"ppo": PPO, "reinforce": REINFORCE}


class _Unpaid(Reward):
    """The environment's reward during IRL: nothing (the learned reward is scored after each rollout)."""

    name = "unpaid"

    def __call__(self, batch: RewardBatch) -> torch.Tensor:
        return torch.zeros(len(batch), device=batch.generated.device)


class Demonstrations:
    """Expert episodes as padded tensors: ``prompts [M, P]``, ``prompt_lengths [M]``, ``actions [M, T]``
    (eos appended when the text fits in ``max_new_tokens``), ``lengths [M]``.

    :param demonstrations: texts (empty prompt), ``(prompt, text)`` pairs, :class:`Example` objects (one
        demonstration per reference) or token-id sequences (empty prompt).
    """

    def __init__(self, demonstrations: Sequence[Any], setup: EnvSetup) -> None:
        if demonstrations is None or len(demonstrations) == 0:
            raise ValueError("demonstrations must not be empty: pass texts, (prompt, text) pairs or Examples")
        tok = setup.tokenizer
        pairs: list[tuple[list[int], list[int]]] = []
        for i, demo in enumerate(demonstrations):
            if isinstance(demo, Example):
                pairs += [
                    (self._encode(tok, demo.prompt, i), self._encode(tok, ref, i)) for ref in demo.references
                ]
            elif isinstance(demo, str):
                pairs.append(([], self._encode(tok, demo, i)))
            elif isinstance(demo, tuple) and len(demo) == 2 and all(isinstance(x, str) for x in demo):
                pairs.append((self._encode(tok, demo[0], i), self._encode(tok, demo[1], i)))
            elif isinstance(demo, (list, tuple, np.ndarray, torch.Tensor)):
                ids = [int(x) for x in demo]
                bad = [x for x in ids if not 0 <= x < tok.vocab_size or x in tok.invalid_action_ids]
                if bad:
                    raise ValueError(
                        f"demonstration {i} has token id {bad[0]}, outside the actions of the vocabulary "
                        f"(0..{tok.vocab_size - 1} except pad/bos/unk {list(tok.invalid_action_ids)})"
                    )
                pairs.append(([], ids))
            else:
                raise ValueError(
                    f"demonstration {i} is a {type(demo).__name__}; expected a text, a (prompt, text) pair, "
                    "an Example or a list of token ids"
                )
        width, prompt_width = setup.max_new_tokens, setup.max_prompt_tokens
        m = len(pairs)
        self.prompts = torch.full((m, max(prompt_width, 1)), tok.pad_id, dtype=torch.long)
        self.actions = torch.full((m, width), tok.pad_id, dtype=torch.long)
        self.prompt_lengths = torch.zeros(m, dtype=torch.long)
        self.lengths = torch.zeros(m, dtype=torch.long)
        for i, (prompt, text) in enumerate(pairs):
            prompt = prompt[:prompt_width]
            actions = (text + [tok.eos_id])[:width]  # too long: truncated like an episode, without eos
            self.prompts[i, : len(prompt)] = torch.tensor(prompt, dtype=torch.long)
            self.actions[i, : len(actions)] = torch.tensor(actions, dtype=torch.long)
            self.prompt_lengths[i], self.lengths[i] = len(prompt), len(actions)

    @staticmethod
    def _encode(tok, text: str, index: int) -> list[int]:
        ids = tok.encode(text)
        if tok.unk_id in ids:
            word = tok.tokenize(text)[ids.index(tok.unk_id)]
            raise ValueError(f"demonstration {index} has the token {word!r}, which is not in the vocabulary")
        return ids

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    def batch(self, rows: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, ...]:
        return tuple(
            t[rows].to(device) for t in (self.prompts, self.prompt_lengths, self.actions, self.lengths)
        )


class IRL:
    """Learn a reward from demonstrations by maximum-entropy inverse RL, training a policy alongside.

    :param policy: the sampler q: any :class:`~agents.policies.base.Policy`, or ``"TransformerPolicy"``.
    :param env: an env id or env; its task supplies the default demonstrations and the prompts, its
        reward is ignored.
    :param demonstrations: default: the task's training (prompt, reference) pairs. Or a list of texts,
        ``(prompt, text)`` pairs, Examples or token-id lists.
    :param reward_model: a :class:`RewardNetwork` to keep training (default: a new one of
        ``reward_kwargs`` sizes, e.g. ``{"n_layer": 2, "n_embd": 64}``).
    :param loss: ``"maxent"`` (importance-weighted max-ent IRL) or ``"airl"`` (AIRL discriminator).
    :param policy_algorithm: ``"ppo"`` or ``"reinforce"``; ``algorithm_kwargs`` go to its constructor
        (default learning rate 3e-4).
    :param alpha: weight of the entropy term ``-alpha * log pi`` in the policy's reward.
    :param reward_learning_rate: AdamW step size of the reward network.
    :param reward_steps: reward gradient steps per rollout; :param expert_batch_size: demonstrations
        per reward step; :param l2_coef: weight of ``mean(r^2)`` (keeps rewards from drifting).
    :param n_envs: episodes per rollout.
    """

    def __init__(
        self,
        policy: Policy | str,
        env: Any,
        demonstrations: Sequence[Any] | None = None,
        reward_model: RewardNetwork | None = None,
        reward_kwargs: dict[str, Any] | None = None,
        loss: str = "maxent",
        policy_algorithm: str = "ppo",
        algorithm_kwargs: dict[str, Any] | None = None,
        alpha: float = 1.0,
        reward_learning_rate: float = 1e-3,
        reward_steps: int = 4,
        expert_batch_size: int = 64,
        l2_coef: float = 0.01,
        n_envs: int = 64,
        policy_kwargs: dict[str, Any] | None = None,
        seed: int | None = None,
        device: str | torch.device = "auto",
        verbose: int = 0,
    ) -> None:
        if loss not in IRL_LOSSES:
            raise ValueError(f"unknown IRL loss {loss!r}; valid: {list(IRL_LOSSES)}")
        if policy_algorithm not in POLICY_ALGORITHMS:
            raise ValueError(
                f"unknown policy_algorithm {policy_algorithm!r}; valid: {sorted(POLICY_ALGORITHMS)}"
            )
        for name, value in (("alpha", alpha), ("l2_coef", l2_coef)):
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        for name, value in (("reward_steps", reward_steps), ("expert_batch_size", expert_batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not reward_learning_rate > 0:
            raise ValueError(f"reward_learning_rate must be > 0, got {reward_learning_rate}")
        setup = env_setup_of(env)
        self.demonstrations = Demonstrations(
            setup.task.examples("train") if demonstrations is None else demonstrations, setup
        )
        # The policy's env pays nothing: rewards come from the network, re-scored after each rollout.
        unpaid = TextGenVectorEnv(num_envs=1, info_text=False, **(dict(setup.kwargs) | {"reward": _Unpaid()}))
        algorithm = POLICY_ALGORITHMS[policy_algorithm]
        self.algorithm = algorithm(
            policy,
            unpaid,
            n_envs=n_envs,
            policy_kwargs=policy_kwargs,
            seed=seed,
            device=device,
            # A from-scratch sampler: PPO's default 1e-4 follows a moving reward too slowly.
            **({"learning_rate": 3e-4} | (algorithm_kwargs or {})),
        )
        self.policy: Policy = self.algorithm.policy
        self.device = self.policy.device
        if reward_model is None:
            positions = (
                2 + setup.max_prompt_tokens + setup.max_new_tokens
            )  # bos + prompt + actions + closing eos
            reward_model = RewardNetwork.for_tokenizer(setup.tokenizer, positions, **(reward_kwargs or {}))
        elif not isinstance(reward_model, RewardNetwork):
            raise ValueError(f"reward_model must be a RewardNetwork, got {type(reward_model).__name__}")
        check_same_vocabulary(reward_model, setup.tokenizer)
        self.reward_model = reward_model.to(self.device)
        self.reward_optimizer = torch.optim.AdamW(
            self.reward_model.parameters(), lr=reward_learning_rate, weight_decay=0.0
        )
        self.loss = loss
        self.alpha = float(alpha)
        self.reward_steps = reward_steps
        self.expert_batch_size = expert_batch_size
        self.l2_coef = float(l2_coef)
        self.seed = seed
        self.verbose = verbose
        self.generator = torch.Generator().manual_seed(0 if seed is None else seed)
        self.num_timesteps = 0
        self._iterations = 0
        self._logger: Logger | None = None

    # ------------------------------------------------------------------ SB3-style surface

    @property
    def logger(self) -> Logger:
        if self._logger is None:
            self._logger = configure(None, ["stdout"] if self.verbose else [])
        return self._logger

    def set_logger(self, logger: Logger) -> None:
        self._logger = logger
        self.algorithm.set_logger(logger)

    def get_env(self) -> TextGenVectorEnv:
        return self.algorithm.get_env()

    # ------------------------------------------------------------------ the two updates

    def reward_loss(self, traj) -> tuple[torch.Tensor, dict[str, float]]:
        """The reward network's loss on one rollout and a batch of demonstrations (see the module doc)."""
        rows = torch.randint(len(self.demonstrations), (self.expert_batch_size,), generator=self.generator)
        e_prompts, e_prompt_lengths, e_actions, e_lengths = self.demonstrations.batch(rows, self.device)
        s_prompt_lengths = self.policy.prompt_lengths(traj.prompts.long())
        r_expert = self.reward_model.episode_rewards(e_prompts, e_prompt_lengths, e_actions, e_lengths)
        r_sample = self.reward_model.episode_rewards(
            traj.prompts, s_prompt_lengths, traj.tokens, traj.lengths
        )
        e_mask = torch.arange(e_actions.shape[1], device=self.device)[None, :] < e_lengths[:, None]
        s_mask = traj.mask
        expert_return, sample_return = r_expert.sum(1), r_sample.sum(1)
        if self.loss == "maxent":
            # log Z by importance sampling from the policy; the demonstrations join the background
            # samples (guided cost learning), which bounds the loss: raising R on the demonstrations alone
            # raises log Z with it.
            with torch.no_grad():
                e_log_q = self.policy.evaluate_sequences(e_prompts, e_actions, e_lengths).log_probs.sum(1)
            log_w = torch.cat([sample_return - traj.log_probs.sum(1), expert_return - e_log_q])
            log_partition = torch.logsumexp(log_w, dim=0) - np.log(len(log_w))
            likelihood = expert_return.mean() - log_partition
            weights = torch.softmax(log_w.detach(), dim=0)
            effective_samples = 1.0 / float((weights**2).sum())
        else:
            with torch.no_grad():
                e_log_pi = self.policy.evaluate_sequences(e_prompts, e_actions, e_lengths).log_probs
            # AIRL's discriminator D = exp(f) / (exp(f) + pi) on every token: logit f(s, a) - log pi(a|s).
            logit_e, logit_s = r_expert - e_log_pi, r_sample - traj.log_probs
            bce = F.binary_cross_entropy_with_logits
            likelihood = -(
                masked_mean(bce(logit_e, torch.ones_like(logit_e), reduction="none"), e_mask)
                + masked_mean(bce(logit_s, torch.zeros_like(logit_s), reduction="none"), s_mask)
            )
            effective_samples = float("nan")
        l2 = (r_expert.pow(2).sum() + r_sample.pow(2).sum()) / (e_mask.sum() + s_mask.sum())
        loss = -likelihood + self.l2_coef * l2
        stats = {
            "reward_loss": float(loss.detach()),
            "expert_return": float(expert_return.mean().detach()),
            "sample_return": float(sample_return.mean().detach()),
            "return_gap": float((expert_return.mean() - sample_return.mean()).detach()),
            "effective_samples": effective_samples,
        }
        return loss, stats

    def update_reward(self, traj) -> dict[str, float]:
        """``reward_steps`` gradient steps of the reward network on one rollout; returns the last stats."""
        self.reward_model.train()
        stats: dict[str, float] = {}
        for _ in range(self.reward_steps):
            loss, stats = self.reward_loss(traj)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"reward_loss is not finite ({float(loss)}) at IRL iteration {self._iterations + 1}; "
                    "lower reward_learning_rate or raise l2_coef"
                )
            self.reward_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.reward_model.parameters(), 1.0)
            self.reward_optimizer.step()
        return stats

    @torch.no_grad()
    def soft_rewards(self, traj) -> torch.Tensor:
        """``[N, T]`` per-token ``r(s_t, a_t) - alpha * log pi_old(a_t|s_t)`` for the policy update."""
        self.reward_model.eval()
        prompt_lengths = self.policy.prompt_lengths(traj.prompts.long())
        rewards = self.reward_model.episode_rewards(traj.prompts, prompt_lengths, traj.tokens, traj.lengths)
        return (rewards - self.alpha * traj.log_probs) * traj.mask

    def learn(
        self,
        total_timesteps: int,
        callback: Any = None,
        progress_bar: bool = False,
        train_reward: bool = True,
    ) -> IRL:
        """Alternate reward and policy updates until ``total_timesteps`` env steps (sampled tokens).

        ``train_reward=False`` freezes the reward network: only the entropy-regularised policy update runs
        (train a fresh policy on a learned reward this way).

        ``callback``: an SB3 callback (or list, or function ``(locals, globals) -> bool``), run once per
        iteration; returning False stops.
        """
        if isinstance(total_timesteps, bool) or not isinstance(total_timesteps, int) or total_timesteps <= 0:
            raise ValueError(f"total_timesteps must be a positive integer, got {total_timesteps!r}")
        algo = self.algorithm
        algo.ensure_reference_policy()  # the KL leash (if on) holds to the policy as IRL found it
        callback = algo._init_callback(callback)
        callback.init_callback(self)
        callback.on_training_start(locals(), globals())
        bar = tqdm(total=total_timesteps, desc="IRL", disable=not progress_bar)
        target = self.num_timesteps + total_timesteps
        self._iterations = 0
        while self.num_timesteps < target:
            traj = algo.collect_rollout()
            self.num_timesteps += traj.num_steps
            algo.num_timesteps += traj.num_steps
            bar.update(traj.num_steps)
            reward_stats = self.update_reward(traj) if train_reward else {}
            policy_stats = algo.train(traj.with_rewards(self.soft_rewards(traj)))
            algo._n_updates += 1
            self._iterations += 1
            for key, value in reward_stats.items():
                self.logger.record(f"irl/{key}", value)
            for key, value in policy_stats.items():
                self.logger.record(f"train/{key}", value)
            self.logger.record("rollout/ep_len_mean", float(traj.lengths.float().mean()))
            self.logger.record("time/total_timesteps", self.num_timesteps)
            self.logger.dump(self.num_timesteps)
            callback.update_locals(locals())
            if callback.on_step() is False:
                break
        bar.close()
        callback.on_training_end()
        return self

    # ------------------------------------------------------------------ results

    @torch.no_grad()
    def score(self, prompts: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        """Learned sequence reward ``R`` of each text given its prompt (eos appended): float64 ``[B]``."""
        setup = env_setup_of(self.get_env())
        demos = Demonstrations(list(zip(prompts, texts, strict=True)), setup)
        self.reward_model.eval()
        rewards = self.reward_model.sequence_rewards(
            demos.prompts, demos.prompt_lengths, demos.actions, demos.lengths
        )
        return rewards.double().cpu().numpy()

    def save(self, folder: str | os.PathLike) -> tuple[Path, Path]:
        """Write ``folder/reward_model.pt`` (for ``gym.make(..., reward="learned", reward_model=...)``) and
        ``folder/policy.zip`` (the sampler, loadable with the policy algorithm's ``load``), each atomically."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        reward_path, policy_path = folder / "reward_model.pt", folder / "policy.zip"
        self.reward_model.save(reward_path)
        self.algorithm.save(policy_path)
        return reward_path, policy_path
