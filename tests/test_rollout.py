"""Packed trajectory storage, the compacting rollout, and scoring episodes in groups of similar length."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import lmrl_gym  # noqa: F401
from agents import TransformerPolicy
from agents.algorithms import PPO
from agents.algorithms.base import length_groups
from agents.rollout import Trajectories, collect_trajectories
from agents.sampling import keyed_uniforms, sample_with_uniforms
from lmrl_gym.vector_env import TextGenVectorEnv

SMALL_COPY = {"task_kwargs": {"num_symbols": 6, "min_length": 3, "max_length": 3}}


pytestmark = pytest.mark.usefixtures("one_thread")


def padded_episodes(seed=0, n=5, width=6, terminal=True):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([1, 6, 3, 6, 2][:n])
    mask = torch.arange(width)[None, :] < lengths[:, None]
    tokens = torch.randint(4, 30, (n, width), generator=g) * mask
    log_probs = -torch.rand(n, width, generator=g) * mask
    values = torch.randn(n, width, generator=g) * mask
    rewards = torch.zeros(n, width)
    rewards[torch.arange(n), lengths - 1] = torch.randn(n, generator=g)
    if not terminal:
        rewards += torch.randn(n, width, generator=g) * mask
    prompts = torch.randint(4, 30, (n, 4), generator=g)
    return prompts, tokens, lengths, log_probs, values, rewards, mask


@pytest.mark.parametrize("terminal", [True, False])
def test_packed_storage_gives_back_the_padded_episodes(terminal):
    prompts, tokens, lengths, log_probs, values, rewards, mask = padded_episodes(terminal=terminal)
    traj = Trajectories.from_padded(
        tokens, lengths, log_probs, values, rewards, pad_id=0, prompts=prompts, vocab_size=30
    )
    assert traj.terminal_rewards is terminal
    assert traj.step_tokens.dtype == torch.uint8 and traj.num_steps == int(lengths.sum()) == 18
    assert torch.equal(traj.prompts, prompts.int()) and torch.equal(traj.lengths, lengths)
    assert torch.equal(traj.tokens, tokens.int()) and torch.equal(traj.mask, mask)
    for name, expected in (("log_probs", log_probs), ("rewards", rewards)):
        assert torch.equal(getattr(traj, name), expected), name
    # Values are kept in bfloat16 (half the bytes) and read back as float32: rounded to 8 significant bits.
    assert traj.values.dtype == torch.float32
    assert torch.equal(traj.values, values.bfloat16().float())
    assert not torch.equal(traj.values, values)  # it really is rounded: these random values need > 8 bits
    assert ((traj.values - values).abs() <= values.abs() * 2**-8).all()
    assert torch.equal(traj.episode_returns(), rewards.sum(1))
    unpacked = traj.unpack()
    assert torch.equal(unpacked.rewards, rewards) and torch.equal(unpacked.tokens, traj.tokens)
    # Every byte it keeps: 18 steps of ids (1), log-probs (4) and values (2), rewards per episode (4 x 5)
    # or per step (4 x 18), 5 lengths (1) and example indices (1), and the prompts it owns (5 x 4 int32).
    reward_bytes = 4 * 5 if terminal else 4 * 18
    assert traj.nbytes == 18 * 7 + reward_bytes + 5 + 5 + 5 * 4 * 4


def test_index_and_with_rewards_keep_the_packing_exact():
    prompts, tokens, lengths, log_probs, values, rewards, mask = padded_episodes()
    traj = Trajectories.from_padded(tokens, lengths, log_probs, values, rewards, pad_id=0, prompts=prompts)
    rows = torch.tensor([4, 0, 2])
    sub = traj.index(rows)
    width = int(lengths[rows].max())
    assert sub.width == width == 3
    assert torch.equal(sub.tokens, tokens[rows, :width].int()) and torch.equal(
        sub.prompts, prompts[rows].int()
    )
    assert torch.equal(sub.log_probs, log_probs[rows, :width]) and torch.equal(
        sub.rewards, rewards[rows, :width]
    )

    dense = torch.randn(5, 6)
    changed = traj.with_rewards(dense)
    assert not changed.terminal_rewards and torch.equal(changed.rewards, dense * mask)
    assert torch.equal(changed.tokens, traj.tokens) and torch.equal(traj.rewards, rewards)  # a copy
    assert torch.equal(changed.index(rows).rewards, (dense * mask)[rows, :width])
    with pytest.raises(ValueError, match="rewards must have shape"):
        traj.with_rewards(torch.zeros(5, 7))


@pytest.mark.parametrize("second_terminal", [True, False])
def test_concatenate_joins_the_episodes_of_each_part_in_order(second_terminal):
    first = padded_episodes(seed=1)
    second = padded_episodes(seed=2, n=3, width=6, terminal=second_terminal)
    a = Trajectories.from_padded(*first[1:6], pad_id=0, prompts=first[0], vocab_size=30)
    # The second part's prompts are wider (a different env's width): padded with pad_id on the right.
    wide = torch.cat([second[0], torch.zeros(3, 2, dtype=second[0].dtype)], 1)
    b = Trajectories.from_padded(*second[1:6], pad_id=0, prompts=wide)
    both = Trajectories.concatenate([a, b])
    assert both.num_episodes == 8 and both.num_steps == a.num_steps + b.num_steps
    assert both.terminal_rewards is second_terminal
    width = both.width
    for name in ("tokens", "log_probs", "values", "rewards", "mask"):
        expected = torch.cat(
            [torch.nn.functional.pad(getattr(t, name), (0, width - t.width)) for t in (a, b)]
        )
        assert torch.equal(getattr(both, name), expected.to(getattr(both, name).dtype)), name
    assert torch.equal(both.prompts[:5, :4], first[0].int()) and (both.prompts[:5, 4:] == 0).all()
    assert torch.equal(both.prompts[5:], wide.int())
    assert torch.equal(both.episode_returns(), torch.cat([a.episode_returns(), b.episode_returns()]))
    with pytest.raises(ValueError, match="different pad ids"):
        Trajectories.concatenate([a, Trajectories.from_padded(*second[1:6], pad_id=1, prompts=second[0])])
    with pytest.raises(ValueError, match="at least one"):
        Trajectories.concatenate([])


def test_a_rollout_keeps_the_env_prompt_table_not_copies_of_prompts():
    torch.manual_seed(0)
    model = PPO(
        "TransformerPolicy",
        "TextGen-v0",
        n_envs=16,
        seed=0,
        device="cpu",
        policy_kwargs={"n_layer": 1, "n_embd": 32},
    )
    traj = model.collect_rollout()
    env = model.env
    assert traj.prompt_table is env.setup.tensors["prompts"] and not traj.owns_prompt_table
    assert torch.equal(traj.prompts, env.setup.tensors["prompts"][traj.example_index.long()].int())
    assert traj.step_tokens.dtype == torch.uint8  # 205 ids
    assert traj.terminal_rewards  # BLEU is paid at the end
    assert traj.num_steps == int(traj.mask.sum())
    per_episode = traj.example_index.element_size() + traj.step_lengths.element_size() + 4
    assert traj.nbytes == traj.num_steps * 7 + 16 * per_episode


def reference_rollout(policy, venv, seed, stream):
    """The plain lock-step rollout: every row stays in the cache, ended rows get eos, and every row draws
    at every step with the uniform keyed by (seed, stream, row, step)."""
    obs, _ = venv.reset()
    n, width = venv.num_envs, venv.setup.max_new_tokens
    eos = policy.tokenizer.eos_id
    tokens = torch.full((n, width), policy.tokenizer.pad_id, dtype=torch.long)
    log_probs, values, rewards = torch.zeros(n, width), torch.zeros(n, width), torch.zeros(n, width)
    active, lengths = torch.ones(n, dtype=torch.bool), torch.zeros(n, dtype=torch.long)
    logits, state = policy.start(obs["prompt_ids"].long())
    for t in range(width):
        log_p = torch.log_softmax(logits, -1)
        uniforms = keyed_uniforms(seed, stream, torch.arange(n), t)
        action = torch.where(active, sample_with_uniforms(log_p.exp(), uniforms), eos)
        tokens[:, t] = torch.where(active, action, tokens[:, t])
        log_probs[:, t] = torch.where(active, log_p.gather(1, action[:, None]).squeeze(1), 0.0)
        values[:, t] = torch.where(active, state.values, 0.0)
        _, reward, terminated, truncated, _ = venv.step(action)
        rewards[:, t] = torch.where(active, reward.float(), 0.0)
        lengths += active.long()
        active &= ~(terminated | truncated)
        if not active.any():
            break
        logits, state = policy.step(state, action)
    return tokens, lengths, log_probs, values, rewards


@torch.no_grad()
def test_dropping_ended_rows_changes_no_sample_and_no_later_example():
    env_kwargs = {"task": "scan", "output": "torch", "info_text": False}
    torch.manual_seed(0)
    policy = TransformerPolicy.for_env("TextGen-SCAN-v0", n_layer=1, n_embd=32, device="cpu").eval()
    ours, theirs = TextGenVectorEnv(num_envs=16, **env_kwargs), TextGenVectorEnv(num_envs=16, **env_kwargs)
    ours.reset(seed=5)
    theirs.reset(seed=5)
    for stream in range(3):  # later rollouts start from the env state the ended rows left behind
        traj = collect_trajectories(policy, ours, 1, stream=stream)
        tokens, lengths, log_probs, values, rewards = reference_rollout(policy, theirs, 1, stream)
        width = traj.width
        assert torch.equal(traj.lengths, lengths) and len(set(lengths.tolist())) > 3
        assert torch.equal(traj.tokens, tokens[:, :width].int())
        torch.testing.assert_close(traj.log_probs, log_probs[:, :width], atol=1e-6, rtol=0)
        assert torch.equal(traj.values, values[:, :width].bfloat16().float())
        assert torch.equal(traj.rewards, rewards[:, :width])


def test_length_groups_cover_the_rows_and_trade_padding_for_passes():
    lengths = np.array([1, 2, 3, 3, 6, 8, 12, 15, 17, 20, 24, 26, 29, 36, 40, 49])
    groups = length_groups(lengths, 10, 40.0)
    assert groups[0][0] == 0 and groups[-1][1] == 16 and 1 < len(groups) <= 3
    for (_, stop, _), (start, _, _) in zip(groups[:-1], groups[1:], strict=True):
        assert stop == start
    assert all(width == lengths[stop - 1] for _, stop, width in groups)
    assert length_groups(np.array([8] * 16), 7, 40.0) == [(0, 16, 8)]  # nothing to save
    assert length_groups(lengths, 10, None) == [(0, 16, 49)]  # one pass where padding is free


def test_scoring_in_length_groups_equals_one_padded_pass():
    torch.manual_seed(0)
    model = PPO(
        "TransformerPolicy",
        gym.make("TextGen-SCAN-v0"),
        n_envs=32,
        seed=0,
        device="cpu",
        policy_kwargs={"n_layer": 1, "n_embd": 32},
    )
    batch = model.collect_rollout().unpack()
    assert len(length_groups(np.sort(batch.lengths.numpy()), 10, 40.0)) > 1
    whole = model.policy.evaluate_sequences(batch.prompts, batch.tokens, batch.lengths)
    grouped = model.evaluate_rollout(batch)
    for name in ("log_probs", "entropy", "values"):
        torch.testing.assert_close(getattr(grouped, name), getattr(whole, name), atol=1e-5, rtol=0)


def test_step_tensors_advances_exactly_as_step():
    kwargs = {"task": "copy", "task_kwargs": SMALL_COPY["task_kwargs"], "output": "torch"}
    a, b = TextGenVectorEnv(num_envs=6, **kwargs), TextGenVectorEnv(num_envs=6, **kwargs)
    a.reset(seed=2)
    b.reset(seed=2)
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        actions = torch.randint(0, a.tokenizer.vocab_size, (6,), generator=g)
        _, reward, terminated, truncated, _ = a.step(actions)
        reward_b, terminated_b, truncated_b = b.step_tensors(actions)
        assert torch.equal(reward, reward_b) and torch.equal(terminated, terminated_b)
        assert torch.equal(truncated, truncated_b) and torch.equal(a.example_index, b.example_index)
