"""The KL leash where the optimum is known exactly: TextGen-Oracle-v0 with the "lm" token reward.

The reward of token a in context h (the last ``order - 1`` generated tokens) is ``log p(a | h)`` under the
env's Kneser-Ney model p; the leash adds ``-beta (log pi(a | h) - log q(a | h))`` for a reference q. With
beta = 1 the return of a sequence x is ``log p(x) + log q(x) - log pi(x)``, so the expected return is
``log Z - KL(pi || pi*)`` with ``pi*(x) = p(x) q(x) / Z``: training must drive KL(pi || pi*) to zero, and
``pi*`` (a soft-optimal policy) follows from a backward recursion over (step, context) states.

Two facts measured here explain why KL(pi || p) itself stopped at ~2.5 nats per episode in the first
version of this test (uniform q, 60k PPO steps):

* the LM is reachable: p puts only ~1e-4 of its mass on ids the policy can never emit (pad, bos, unk),
  and the ``max_new_tokens`` cut costs nothing (a cut sequence is scored by its prefix alone), so with
  ``log q = 0`` the optimum is p itself to within 1e-3 nats;
* a uniform q over the 21 valid ids is not neutral: ``log q(x) = -|x| log 21`` charges ~3 nats per token,
  so ``pi*`` prefers short sentences (about 2 tokens instead of 9.25) and KL(pi* || p) = 2.31 nats: the
  plateau was the optimum of that objective, reached to within ~0.06 nats.

The last test makes the LM itself the optimum: a token reward of ``log 21`` cancels the uniform
reference's charge, so the return is ``log p(x) - log pi(x)`` and training drives KL(pi || p) toward 0
(from a briefly pretrained policy; from a random one PPO falls into "one word, then eos").
"""

from __future__ import annotations

import copy
import time

import gymnasium as gym
import numpy as np
import pytest
import torch

import lmrl_gym  # noqa: F401  (registers TextGen-Oracle-v0)
from agents import pretrain
from agents.algorithms import PPO
from lmrl_gym.rewards import Reward

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def oracle_env():
    return gym.make("TextGen-Oracle-v0", reward="lm")


class SoftOptimum:
    """``pi*(a | h, t)`` for the return ``sum_t log p(a_t | h_t) + log_q`` per token (``log_q`` constant).

    States are (step t, context h = the last ``order - 1`` tokens, bos-padded), as the reward sees them;
    ``value[t, h] = log sum_a p(a | h) q exp(value[t + 1, h'])`` over the valid actions (words continue,
    eos ends, and after ``max_new_tokens`` actions the episode is cut with nothing more to score), and
    ``log pi*(a | h, t) = log p(a | h) + log_q + value[t + 1, h'] - value[t, h]``.
    """

    def __init__(self, env: gym.Env, log_q: float) -> None:
        setup = env.unwrapped.setup
        tok, lm = setup.tokenizer, setup.reward.model
        self.vocab, self.steps, self.eos, self.bos = (
            tok.vocab_size,
            setup.max_new_tokens,
            tok.eos_id,
            tok.bos_id,
        )
        self.width = lm.order - 1
        num_contexts = self.vocab**self.width
        # contexts[i] = the base-vocab digits of i, oldest first: the layout of context_index below.
        contexts = np.stack(np.unravel_index(np.arange(num_contexts), (self.vocab,) * self.width), axis=1)
        self.log_p = lm.next_token_logprobs(contexts)  # [contexts, vocab]
        valid = np.ones(self.vocab, dtype=bool)
        valid[list(tok.invalid_action_ids)] = False
        self.valid = valid
        words = np.flatnonzero(valid & (np.arange(self.vocab) != self.eos))
        # Context after appending word w to context i: drop the oldest digit, append w.
        self.next_context = (
            np.arange(num_contexts)[:, None] * self.vocab + np.arange(self.vocab)
        ) % num_contexts
        self.value = np.zeros((self.steps + 1, num_contexts))
        self.log_pi = np.full((self.steps, num_contexts, self.vocab), -np.inf)
        for t in range(self.steps - 1, -1, -1):
            q = np.full((num_contexts, self.vocab), -np.inf)
            q[:, words] = self.log_p[:, words] + log_q + self.value[t + 1][self.next_context[:, words]]
            q[:, self.eos] = self.log_p[:, self.eos] + log_q
            self.value[t] = np.logaddexp.reduce(q, axis=1)
            self.log_pi[t] = q - self.value[t][:, None]

    @property
    def start(self) -> int:
        return self.context_index(np.full((1, self.width), self.bos))[0]

    def context_index(self, contexts: np.ndarray) -> np.ndarray:
        return np.ravel_multi_index(tuple(contexts.T), (self.vocab,) * self.width)

    def token_log_probs(self, tokens: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(log pi*(a_t), log p(a_t))`` for episodes ``tokens [N, T]`` (actions, eos included), 0 past the end."""
        n, width = tokens.shape
        mask = np.arange(width)[None, :] < lengths[:, None]
        seq = np.concatenate([np.full((n, self.width), self.bos), np.where(mask, tokens, self.eos)], axis=1)
        ctx = self.context_index(
            np.stack([seq[:, i : i + width] for i in range(self.width)], axis=2).reshape(-1, self.width)
        )
        ctx, act = ctx.reshape(n, width), seq[:, self.width :]
        steps = np.broadcast_to(np.arange(width), (n, width))
        return np.where(mask, self.log_pi[steps, ctx, act], 0.0), np.where(mask, self.log_p[ctx, act], 0.0)

    def expected_tokens(self) -> float:
        """E[actions per episode] under pi* (forward pass over the state distribution)."""
        dist = np.zeros(len(self.value[0]))
        dist[self.start] = 1.0
        total = 0.0
        for t in range(self.steps):
            total += dist.sum()
            flow = dist[:, None] * np.exp(self.log_pi[t])
            flow[:, self.eos] = 0.0  # eos ends the episode
            dist = np.bincount(self.next_context.ravel(), weights=flow.ravel(), minlength=len(dist))
        return total


def lm_invalid_mass(opt: SoftOptimum) -> float:
    """P_p(an invalid id before eos within max_new_tokens): a forward pass of the LM itself, independent
    of the backward recursion."""
    dist = np.zeros(len(opt.value[0]))
    dist[opt.start] = 1.0
    invalid = 0.0
    for _ in range(opt.steps):
        probs = dist[:, None] * np.exp(opt.log_p)
        invalid += probs[:, ~opt.valid].sum()
        probs[:, ~opt.valid] = 0.0
        probs[:, opt.eos] = 0.0
        dist = np.bincount(opt.next_context.ravel(), weights=probs.ravel(), minlength=len(dist))
    return float(invalid)


def test_the_lm_is_reachable_and_a_uniform_reference_tilts_the_optimum_to_short_sentences(oracle_env):
    exact = SoftOptimum(oracle_env, log_q=0.0)
    # With log q = 0 the optimum value is log P_p(valid ids only), which a forward pass of p confirms.
    floor = -exact.value[0, exact.start]
    assert floor == pytest.approx(-np.log1p(-lm_invalid_mass(exact)), rel=1e-6)
    assert 0 <= floor < 1e-3, floor
    assert np.allclose(np.exp(exact.log_pi).sum(-1), 1.0)
    lm_tokens = exact.expected_tokens()

    num_valid = int(exact.valid.sum())
    uniform = SoftOptimum(oracle_env, log_q=-np.log(num_valid))
    # KL(pi* || p) = E[sum log pi* - log p] = E|x| log q - value (the per-token terms telescope).
    short_tokens = uniform.expected_tokens()
    kl_star = -short_tokens * np.log(num_valid) - uniform.value[0, uniform.start]
    print(
        f"LM: {lm_tokens:.2f} tokens, KL floor {floor:.1e}; uniform reference optimum: {short_tokens:.2f} "
        f"tokens, KL(pi* || LM) {kl_star:.3f}"
    )
    assert num_valid == 21 and lm_tokens > 8
    assert short_tokens < 3 and 2.0 < kl_star < 2.6, (short_tokens, kl_star)


def kl_estimates(model: PPO, opt: SoftOptimum, rollouts: int = 4) -> tuple[float, float, float]:
    """Monte-Carlo ``KL(pi || pi*)``, its standard error, and ``KL(pi || p)`` per episode (nats)."""
    to_opt, to_lm = [], []
    for _ in range(rollouts):
        traj = model.collect_rollout()
        log_pi = (traj.log_probs * traj.mask).numpy().astype(np.float64)
        log_star, log_p = opt.token_log_probs(traj.tokens.long().numpy(), traj.lengths.numpy())
        to_opt.append((log_pi - log_star).sum(1))
        to_lm.append((log_pi - log_p).sum(1))
    to_opt, to_lm = np.concatenate(to_opt), np.concatenate(to_lm)
    return float(to_opt.mean()), float(to_opt.std() / np.sqrt(len(to_opt))), float(to_lm.mean())


@pytest.mark.slow
def test_ppo_with_the_kl_leash_reaches_the_soft_optimum(oracle_env):
    """Measured (seed 0): KL(pi || pi*) 58.2 -> 0.061 +- 0.007 nats per episode after 20k steps (~15 s; it
    is below 0.1 from 10k steps on), and KL(pi || LM) 25.9 -> 2.54, against the 2.31 of pi* itself."""
    num_valid = 21
    opt = SoftOptimum(oracle_env, log_q=-np.log(num_valid))
    torch.manual_seed(0)
    model = PPO(
        "TransformerPolicy",
        oracle_env,
        seed=0,
        device="cpu",
        n_envs=64,
        learning_rate=3e-4,
        policy_kwargs={"n_layer": 2, "n_embd": 64},
        kl_coef=1.0,
    )
    uniform = copy.deepcopy(model.policy)
    with torch.no_grad():
        uniform.model.token_embedding.weight.zero_()  # tied LM head, no bias: every logit 0
    model.reference_policy = uniform.eval().requires_grad_(False)
    # The reference the leash sees really is uniform over the valid ids: log q = -log 21 per token.
    traj = model.collect_rollout()
    ref = uniform.evaluate_sequences(traj.prompts, traj.tokens, traj.lengths).log_probs[traj.mask]
    assert torch.allclose(ref, torch.full_like(ref, -np.log(num_valid)), atol=1e-5)

    before, _, lm_before = kl_estimates(model, opt)
    model.learn(20_000)
    after, stderr, lm_after = kl_estimates(model, opt)
    lm_floor = -opt.expected_tokens() * np.log(num_valid) - opt.value[0, opt.start]
    print(
        f"KL(pi || pi*) per episode: {before:.2f} -> {after:.3f} +- {stderr:.3f}; KL(pi || LM): {lm_before:.2f} "
        f"-> {lm_after:.2f} (pi* itself: {lm_floor:.2f})"
    )  # the README's figures (pytest -s)
    assert before > 20, before
    assert after < 0.5, (before, after, stderr)
    # What the old test watched: KL to the LM goes to the optimum's own value, not to 0.
    assert abs(lm_after - lm_floor) < 0.6, (lm_after, lm_floor)


class LogNumValid(Reward):
    """A token reward of ``log 21`` per action (eos included): it cancels the ``log q = -log 21`` per token
    that the leash to a uniform reference adds, leaving the return ``log p(x) - log pi(x)``."""

    name = "log_num_valid"
    per_token = True

    def __call__(self, batch):
        return np.full(len(batch), np.log(21.0))


def leash_to_the_lm(seed: int, steps: int = 40_000) -> dict[str, float]:
    """Pretrain briefly, then PPO on ``E[sum_t log p(a_t | h_t) - log pi(a_t | h_t)] = -KL(pi || p)``.

    Returns KL(pi || p) per episode before and after PPO (Monte-Carlo, nats), its standard error, the
    mean episode length before and after, and the seconds of each phase.
    """
    env = gym.make("TextGen-Oracle-v0", reward={"lm": 1.0, LogNumValid(): 1.0})
    # The same Kneser-Ney model as the plain "lm" env's (fitted deterministically on the same text).
    opt = SoftOptimum(gym.make("TextGen-Oracle-v0", reward="lm"), log_q=0.0)
    torch.manual_seed(seed)
    model = PPO(
        "TransformerPolicy",
        env,
        seed=seed,
        device="cpu",
        n_envs=64,
        learning_rate=1e-4,
        # lambda = 0.5 (not 0.95): near the optimum each token's own reward log p - log pi is the signal
        # and the rest of the episode mostly noise (seed 0, 40k steps: ~0.45 vs ~0.55 nats, noisy).
        gae_lambda=0.5,
        policy_kwargs={"n_layer": 2, "n_embd": 64},
        kl_coef=1.0,
    )
    uniform = copy.deepcopy(model.policy)
    with torch.no_grad():
        uniform.model.token_embedding.weight.zero_()  # every logit 0: log q = -log 21 per valid id
    # Set before pretraining: the default reference (a copy of the policy when learn starts) would be the
    # pretrained policy, and the optimum would no longer be p.
    model.reference_policy = uniform.eval().requires_grad_(False)

    started = time.perf_counter()
    # From a random policy PPO settles on "one word, then eos" (KL ~2.5): while per-token mismatch is
    # large, ending early is what improves -KL fastest. Three epochs of MLE on the task's text start it
    # close to p: of the ~2.7 nats left, ~1.2 are the first word depending on the prompt (p ignores it)
    # and the rest the transformer's fit vs Kneser-Ney's smoothing.
    pretrain(model.policy, env, epochs=3, learning_rate=3e-3, seed=seed)
    pretrained = time.perf_counter()

    # The penalised per-token reward the update sees is exactly log p(a_t | h_t) - log pi_old(a_t | h_t).
    traj = model.collect_rollout()
    batch = traj.unpack()
    rewards, _ = model.penalised_rewards(batch)
    _, log_p = opt.token_log_probs(batch.tokens.long().numpy(), batch.lengths.numpy())
    expected = (torch.as_tensor(log_p, dtype=torch.float32) - batch.log_probs) * batch.mask
    assert torch.allclose(rewards * batch.mask, expected, atol=1e-4)

    _, _, before = kl_estimates(model, opt, rollouts=8)
    len_before = float(model.collect_rollout().lengths.float().mean())
    model.learn(steps)
    _, _, after = kl_estimates(model, opt, rollouts=8)
    # Its standard error, from a separate estimate (kl_estimates reports the error of KL to pi* = p).
    _, stderr, _ = kl_estimates(model, opt, rollouts=8)
    len_after = float(model.collect_rollout().lengths.float().mean())
    return {
        "before": before,
        "after": after,
        "stderr": stderr,
        "len_before": len_before,
        "len_after": len_after,
        "lm_len": opt.expected_tokens(),
        "pretrain_s": pretrained - started,
        "ppo_s": time.perf_counter() - pretrained,
    }


@pytest.mark.slow
def test_ppo_with_lm_reward_and_a_cancelled_leash_drives_kl_to_the_lm_toward_zero():
    """The issue's item: an ``lm`` token reward plus a KL term whose optimum is the reference LM itself.

    Reward ``log p + log 21`` per token and ``kl_coef = 1`` against a uniform reference (``-log pi - log 21``
    per token) make the return ``log p(x) - log pi(x)``, so the expected return is ``-KL(pi || p)``.
    Measured (seeds 0, 1, 2): KL(pi || p) per episode 2.68 / 2.66 / 2.72 after pretraining -> 0.61 / 0.52 /
    0.42 after 40k PPO steps (0.53 / 0.47 / 0.38 after 60k), against 2.31 at the optimum of a plain uniform
    leash (the test above); episodes end a little early (7-8 tokens vs p's 9.25). ~5-8 s pretraining and
    ~13-15 s PPO on an idle CPU core.
    """
    figures = leash_to_the_lm(seed=0)
    print(
        "KL(pi || LM) per episode: {before:.2f} -> {after:.2f} (+- {stderr:.2f}); episode length "
        "{len_before:.2f} -> {len_after:.2f} (LM: {lm_len:.2f}); pretrain {pretrain_s:.1f} s, PPO 40k steps "
        "{ppo_s:.1f} s".format(**figures)
    )  # the README's figures (pytest -s)
    assert figures["before"] > 2.0, figures
    # Measured 0.42-0.61: a third of the start at most, and well under the 2.31 of a plain uniform leash.
    assert figures["after"] < 1.0 and figures["after"] < figures["before"] / 3, figures
    # Not the "one word, then eos" trap nor the ~2-token optimum of a uniform leash (measured 7-8 tokens).
    assert figures["len_after"] > 5, figures
