"""The learned reward: RewardNetwork shapes and consistency, save / load, use through gym.make, bad input."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import lmrl_gym  # noqa: F401
from lmrl_gym.rewards import LearnedReward, RewardNetwork, make_reward
from lmrl_gym.tokenizer import Tokenizer
from lmrl_gym.vector_env import TextGenVectorEnv

ENV_ID = "TextGen-Oracle-v0"


@pytest.fixture(scope="module")
def env():
    return gym.make(ENV_ID)


@pytest.fixture(scope="module")
def network(env):
    torch.manual_seed(0)
    setup = env.unwrapped.setup
    net = RewardNetwork.for_tokenizer(setup.tokenizer, 2 + setup.max_prompt_tokens + setup.max_new_tokens)
    with torch.no_grad():  # a non-trivial function, so the consistency checks can fail
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return net.eval()


def random_episodes(setup, batch: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    tok = setup.tokenizer
    prompt_lengths = torch.randint(0, setup.max_prompt_tokens + 1, (batch,), generator=g)
    prompts = torch.randint(4, tok.vocab_size, (batch, setup.max_prompt_tokens), generator=g)
    prompts = torch.where(
        torch.arange(setup.max_prompt_tokens)[None] < prompt_lengths[:, None], prompts, tok.pad_id
    )
    lengths = torch.randint(0, setup.max_new_tokens + 1, (batch,), generator=g)
    actions = torch.randint(4, tok.vocab_size, (batch, setup.max_new_tokens), generator=g)
    actions = torch.where(torch.arange(setup.max_new_tokens)[None] < lengths[:, None], actions, tok.pad_id)
    return prompts, prompt_lengths, actions, lengths


def test_token_rewards_shape_mask_and_sequence_sum(env, network):
    setup = env.unwrapped.setup
    prompts, prompt_lengths, actions, lengths = random_episodes(setup, 32, seed=1)
    lengths = lengths.clamp(min=1)
    actions[:16][torch.arange(16), lengths[:16] - 1] = setup.tokenizer.eos_id  # half end with eos
    with torch.no_grad():
        r = network.token_rewards(prompts, prompt_lengths, actions, lengths)
        total = network.sequence_rewards(prompts, prompt_lengths, actions, lengths)
    assert r.shape == actions.shape and r.dtype == torch.float32 and total.shape == (32,)
    beyond = torch.arange(actions.shape[1])[None] >= lengths[:, None]
    assert torch.all(r[beyond] == 0)
    assert torch.all(r[~beyond] != 0)
    # episodes ended by eos: the sequence reward is the plain sum of the token rewards
    torch.testing.assert_close(total[:16], r[:16].sum(1))
    assert not torch.allclose(total[16:], r[16:].sum(1))  # cut-off ones also pay a closing eos


def test_a_cut_off_episode_is_scored_as_the_complete_text(env, network):
    """episode_rewards: an episode without a closing eos pays that eos's reward on its last action, so its
    sequence reward equals that of the same text ended by eos."""
    setup = env.unwrapped.setup
    tok = setup.tokenizer
    prompts, prompt_lengths, actions, lengths = random_episodes(setup, 16, seed=4)
    lengths = lengths.clamp(min=1, max=setup.max_new_tokens - 1)
    closed = actions.clone()
    closed[torch.arange(16), lengths] = tok.eos_id
    with torch.no_grad():
        cut = network.episode_rewards(prompts, prompt_lengths, actions, lengths)
        ended = network.episode_rewards(prompts, prompt_lengths, closed, lengths + 1)
        plain = network.token_rewards(prompts, prompt_lengths, actions, lengths)
    torch.testing.assert_close(cut.sum(1), ended.sum(1))
    # every action but the last pays the same; the last pays its own reward plus the closing eos's
    before_last = torch.arange(actions.shape[1])[None] < (lengths - 1)[:, None]
    torch.testing.assert_close(cut[before_last], plain[before_last])
    rows = torch.arange(16)
    torch.testing.assert_close(cut[rows, lengths - 1], plain[rows, lengths - 1] + ended[rows, lengths])


def test_token_rewards_do_not_depend_on_padding_or_later_tokens(env, network):
    """r(s_t, a_t) depends on the prompt and a_<t only: padding width and later actions change nothing."""
    setup = env.unwrapped.setup
    prompts, prompt_lengths, actions, lengths = random_episodes(setup, 16, seed=2)
    with torch.no_grad():
        r = network.token_rewards(prompts, prompt_lengths, actions, lengths)
        # one row at a time, with no padding at all
        for b in range(16):
            p, n = int(prompt_lengths[b]), int(lengths[b])
            alone = network.token_rewards(
                prompts[b : b + 1, :p], prompt_lengths[b : b + 1], actions[b : b + 1, :n], lengths[b : b + 1]
            )
            torch.testing.assert_close(alone[0], r[b, :n], atol=1e-5, rtol=1e-5)
        # changing the last action leaves every earlier reward as it was
        changed = actions.clone()
        last = (lengths - 1).clamp(min=0)
        changed[torch.arange(16), last] = 4 + (changed[torch.arange(16), last] - 3) % (
            setup.tokenizer.vocab_size - 4
        )
        r2 = network.token_rewards(prompts, prompt_lengths, changed, lengths)
    earlier = torch.arange(actions.shape[1])[None] < last[:, None]
    torch.testing.assert_close(r2[earlier], r[earlier])


def test_vector_env_pays_token_rewards_that_sum_to_the_network_sequence_reward(env, network, tmp_path):
    """Each step pays r(s_t, a_t); an episode's payments, its reported component and the network's
    sequence reward of the final observation (eos appended when it ended with eos) agree."""
    path = tmp_path / "reward.pt"
    network.save(path)
    setup = env.unwrapped.setup
    tok = setup.tokenizer
    n = 8
    venv = TextGenVectorEnv(num_envs=n, task=setup.task, reward="learned", reward_model=path, info_text=False)
    venv.reset(seed=3)
    rng = np.random.default_rng(3)
    paid, ended = np.zeros(n), np.zeros(n, bool)
    component, final_obs, with_eos = np.zeros(n), [None] * n, np.zeros(n, bool)
    for t in range(setup.max_new_tokens):
        act = rng.integers(4, tok.vocab_size, size=n)
        act[: n // 2] = np.where(t >= 3, tok.eos_id, act[: n // 2])  # half end with eos, half run long
        _, reward, term, trunc, info = venv.step(act)
        paid += np.where(ended, 0.0, reward)
        for i in np.flatnonzero((term | trunc) & ~ended):
            component[i] = info["final_info"]["reward_components"]["learned"][i]
            final_obs[i], with_eos[i] = info["final_obs"][i], act[i] == tok.eos_id
        ended |= term | trunc
        if ended.all():
            break
    assert ended.all() and with_eos[: n // 2].all() and not with_eos[n // 2 :].any()
    np.testing.assert_allclose(component, paid, atol=1e-5)
    prompts = torch.as_tensor(np.stack([o["prompt_ids"] for o in final_obs])).long()
    prefix = torch.as_tensor(np.stack([o["prefix_ids"] for o in final_obs])).long()
    # The final observation's prefix holds every action taken, the closing eos included.
    expected = network.sequence_rewards(
        prompts, (prompts != tok.pad_id).sum(1), prefix, (prefix != tok.pad_id).sum(1)
    )
    np.testing.assert_allclose(paid, expected.detach().numpy(), atol=1e-4)
    assert np.ptp(paid) > 0.1


def test_gym_make_learned_reward_equals_the_network_on_one_episode(env, network, tmp_path):
    path = tmp_path / "reward.pt"
    network.save(path)
    single = gym.make(ENV_ID, reward="learned", reward_model=str(path))
    obs, _ = single.reset(seed=5)
    tok = single.unwrapped.tokenizer
    actions = [5, 9, 7, tok.eos_id]
    total = 0.0
    for a in actions:
        obs, r, term, trunc, info = single.step(a)
        total += r
    assert term and not trunc
    prompt = torch.as_tensor(obs["prompt_ids"])[None].long()
    expected = network.sequence_rewards(
        prompt, (prompt != tok.pad_id).sum(1), torch.tensor([actions]), torch.tensor([len(actions)])
    )
    assert total == pytest.approx(float(expected.detach()), abs=1e-5)
    assert info["reward_components"]["learned"] == pytest.approx(total, abs=1e-5)


def test_save_load_round_trip_is_exact(network, tmp_path):
    path = tmp_path / "reward.pt"
    network.save(path)
    loaded = RewardNetwork.load(path)
    assert loaded.config == network.config
    assert loaded.tokenizer == network.tokenizer
    for (name, a), (_, b) in zip(network.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert not list(tmp_path.glob("*.tmp")), "atomic save leaves no temporary file"


def test_learned_reward_without_a_model_is_a_clear_error():
    with pytest.raises(ValueError, match="needs a reward model"):
        gym.make(ENV_ID, reward="learned")
    with pytest.raises(ValueError, match="reward_model is only used by reward='learned'"):
        gym.make(ENV_ID, reward="lm", reward_model="x.pt")
    with pytest.raises(ValueError, match="must be a RewardNetwork or a file path"):
        make_reward("learned", reward_model=42)


def test_reward_model_for_another_vocabulary_is_rejected(network, tmp_path):
    other = Tokenizer(["<pad>", "<bos>", "<eos>", "<unk>", "a", "b", "c"])
    foreign = RewardNetwork.for_tokenizer(other, 32)
    path = tmp_path / "foreign.pt"
    foreign.save(path)
    with pytest.raises(ValueError, match="another vocabulary: it has 7 tokens"):
        gym.make(ENV_ID, reward="learned", reward_model=path)
    # same size, different words
    shuffled = list(network.tokenizer.id_to_token)
    shuffled[4], shuffled[5] = shuffled[5], shuffled[4]
    swapped = RewardNetwork.for_tokenizer(Tokenizer(shuffled), 32)
    with pytest.raises(ValueError, match="id 4 is"):
        gym.make(ENV_ID, reward=LearnedReward(swapped))


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", None])
def test_missing_garbage_or_foreign_files_are_clear_errors(tmp_path, content):
    path = tmp_path / "reward.pt"
    if content is not None:
        path.write_bytes(content)
        match = "not a readable reward model"
    else:
        match = "does not exist"
    with pytest.raises(ValueError, match=match):
        RewardNetwork.load(path)
    torch.save({"format": "something else"}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a reward model checkpoint"):
        RewardNetwork.load(tmp_path / "foreign.pt")


def test_too_long_inputs_are_rejected(env):
    tok = env.unwrapped.tokenizer
    net = RewardNetwork.for_tokenizer(tok, max_positions=4)
    with pytest.raises(ValueError, match="at most 4"):
        net.token_rewards(torch.full((1, 2), 5), torch.tensor([2]), torch.full((1, 3), 5), torch.tensor([3]))


def test_bad_config_is_rejected(env):
    with pytest.raises(ValueError, match="divisible"):
        RewardNetwork.for_tokenizer(env.unwrapped.tokenizer, 16, n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="n_layer must be a positive integer"):
        RewardNetwork.for_tokenizer(env.unwrapped.tokenizer, 16, n_layer=0)
