import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import ResetNeeded

from lmrl_gym import TextGenEnv
from lmrl_gym.rewards import KneserNeyLM, RewardError, batched, sentence_bleu

COPY_SMALL = {"num_symbols": 6, "min_length": 3, "max_length": 3}


def play(env, text, seed=None, index=None):
    """Reset, then emit ``text``'s tokens and eos; return (rewards, last info)."""
    options = None if index is None else {"index": index}
    env.reset(seed=seed, options=options)
    rewards, info = [], {}
    for token in [*env.unwrapped.tokenizer.encode(text), env.unwrapped.tokenizer.eos_id]:
        _, reward, terminated, truncated, info = env.step(token)
        rewards.append(reward)
        if terminated or truncated:
            break
    return rewards, info


def test_playing_the_reference_gets_bleu_one_and_the_text():
    env = TextGenEnv(task="copy", task_kwargs=COPY_SMALL)
    _, info = env.reset(seed=0)
    example = env.setup.data.examples[info["example_index"]]
    rewards, info = play(env, example.references[0], index=info["example_index"])
    assert rewards[:-1] == [0.0] * (len(rewards) - 1)  # sequence reward paid only at the end
    assert rewards[-1] == pytest.approx(1.0)
    assert info["text"] == example.references[0]
    assert info["references"] == example.references
    assert info["prompt"] == example.prompt
    assert info["reward_components"] == {"bleu": pytest.approx(1.0)}
    assert info["invalid_action"] is False


def test_bleu_reward_is_sacrebleu_sentence_bleu_over_100():
    env = TextGenEnv(task="numbers")
    tok = env.tokenizer
    example = env.setup.data.examples[5]
    hyp = "mille deux cent"
    rewards, _ = play(env, hyp, index=5)
    expected = sentence_bleu(tok.encode(hyp), [tok.encode(r) for r in example.references]) / 100
    assert rewards[-1] == pytest.approx(expected, abs=1e-12)


def test_observation_holds_prompt_and_growing_prefix():
    env = TextGenEnv(task="copy", task_kwargs=COPY_SMALL)
    obs, info = env.reset(seed=1)
    tok = env.tokenizer
    prompt = env.setup.data.examples[info["example_index"]].prompt
    assert obs["prompt_ids"].dtype == np.int32
    assert list(obs["prompt_ids"][: len(tok.encode(prompt))]) == tok.encode(prompt)
    assert not obs["prefix_ids"].any()
    obs, *_ = env.step(tok.encode("a")[0])
    assert obs["prefix_ids"][0] == tok.encode("a")[0] and not obs["prefix_ids"][1:].any()
    assert env.observation_space.contains(obs)


def test_eos_and_max_new_tokens_both_terminate():
    env = TextGenEnv(task="copy", task_kwargs=COPY_SMALL, max_new_tokens=3)
    tok = env.tokenizer
    env.reset(seed=0)
    *_, terminated, truncated, info = env.step(tok.eos_id)
    assert terminated and not truncated and not info["length_limit"]
    env.reset(seed=0)
    a = tok.encode("a")[0]
    results = [env.step(a) for _ in range(3)]
    assert [r[2] for r in results] == [False, False, True]
    assert not any(r[3] for r in results)
    assert results[-1][4]["text"] == "a a a" and results[-1][4]["length_limit"] is True


@pytest.mark.parametrize("bad_id_name", ["pad_id", "bos_id", "unk_id"])
def test_invalid_action_ends_episode_with_penalty_and_keeps_prefix(bad_id_name):
    env = TextGenEnv(task="copy", task_kwargs=COPY_SMALL, invalid_action_penalty=-2.5)
    tok = env.tokenizer
    _, info = env.reset(seed=0)
    assert info["action_mask"][getattr(tok, bad_id_name)] == 0
    assert not env.action_masks()[getattr(tok, bad_id_name)]
    a = tok.encode("b")[0]
    env.step(a)
    obs, reward, terminated, truncated, info = env.step(getattr(tok, bad_id_name))
    assert terminated and not truncated and reward == -2.5
    assert info["invalid_action"] is True
    assert info["reward_components"] == {"invalid_action_penalty": -2.5}
    assert list(obs["prefix_ids"][:2]) == [a, tok.pad_id]
    assert info["text"] == "b"


@pytest.mark.parametrize("action", [-1, 10_000, 2.0, "a", None, True, np.array([1, 2])])
def test_action_outside_the_space_raises_value_error(action):
    env = TextGenEnv(task="copy")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(action)


def test_numpy_integer_and_zero_dim_actions_are_accepted():
    env = TextGenEnv(task="copy")
    env.reset(seed=0)
    env.step(np.int64(5))
    env.step(np.array(6))


def test_step_after_the_end_or_before_reset_is_a_clear_error():
    env = TextGenEnv(task="copy")
    with pytest.raises(ResetNeeded, match="before reset"):
        env.step(4)
    env.reset(seed=0)
    env.step(env.tokenizer.eos_id)
    with pytest.raises(ResetNeeded, match="episode has ended"):
        env.step(4)


def test_reset_is_deterministic_and_index_option_picks_the_example():
    env = TextGenEnv(task="numbers")
    firsts = [env.reset(seed=7)[1]["example_index"] for _ in range(2)]
    assert firsts[0] == firsts[1]
    sequence = [env.reset()[1]["example_index"] for _ in range(5)]
    env.reset(seed=7)
    assert [env.reset()[1]["example_index"] for _ in range(5)] == sequence
    assert len(set(sequence)) > 1
    obs, info = env.reset(options={"index": 42})
    assert info["example_index"] == 42
    with pytest.raises(ValueError, match="options\\['index'\\]"):
        env.reset(options={"index": env.num_examples})


def test_sequential_sampling_walks_the_split_in_order():
    env = TextGenEnv(task="numbers", split="test", sampling="sequential")
    indices = [env.reset(seed=0)[1]["example_index"]] + [env.reset()[1]["example_index"] for _ in range(4)]
    assert indices == [0, 1, 2, 3, 4]


def test_render_ansi_shows_prompt_and_text():
    env = TextGenEnv(task="copy", task_kwargs=COPY_SMALL, render_mode="ansi")
    _, info = env.reset(seed=0)
    env.step(env.tokenizer.encode("c")[0])
    text = env.render()
    assert env.setup.data.examples[info["example_index"]].prompt in text
    assert "generated:  c" in text


def test_shaping_telescopes_to_the_final_score():
    plain = TextGenEnv(task="numbers")
    shaped = TextGenEnv(task="numbers", shaping=True)
    text = "mille deux cent trente"
    for index in (3, 11):
        r_plain, _ = play(plain, text, index=index)
        r_shaped, info = play(shaped, text, index=index)
        assert sum(r_shaped) == pytest.approx(r_plain[-1], abs=1e-12)
        assert info["reward_components"]["bleu"] == pytest.approx(r_plain[-1])
        assert any(r != 0 for r in r_shaped[:-1]) or r_plain[-1] == 0


def test_lm_token_rewards_sum_to_the_sequence_log_probability():
    env = TextGenEnv(task="oracle", reward="lm")
    tok = env.tokenizer
    model: KneserNeyLM = env.setup.reward.model
    text = env.setup.data.examples[0].references[0]
    rewards, info = play(env, text, index=0)
    assert all(r < 0 for r in rewards)
    ids = np.array([tok.encode(text)])
    expected = model.sequence_logprob(ids, np.array([ids.shape[1]]))[0]
    assert sum(rewards) == pytest.approx(expected, abs=1e-9)
    assert info["reward_components"]["lm"] == pytest.approx(expected, abs=1e-9)


def test_weighted_sum_pays_token_parts_each_step_and_sequence_part_at_the_end():
    env = TextGenEnv(task="numbers", reward={"bleu": 2.0, "lm": 0.5})
    example = env.setup.data.examples[0]
    rewards, info = play(env, example.references[0], index=0)
    comps = info["reward_components"]
    assert comps["bleu"] == pytest.approx(1.0)
    assert sum(rewards) == pytest.approx(2.0 * comps["bleu"] + 0.5 * comps["lm"], abs=1e-9)


def test_plain_python_functions_per_episode_and_batched():
    def length_reward(text, references, prompt):
        return float(len(text.split()))

    @batched
    def batched_reward(texts, references, prompts):
        return [float(t == refs[0]) for t, refs in zip(texts, references, strict=True)]

    env = TextGenEnv(task="copy", task_kwargs=COPY_SMALL, reward=length_reward)
    assert play(env, "a b", index=0)[0][-1] == 2.0
    env = TextGenEnv(task="copy", task_kwargs=COPY_SMALL, reward=batched_reward)
    reference = env.setup.data.examples[0].references[0]
    assert play(env, reference, index=0)[0][-1] == 1.0
    assert play(env, "a", index=0)[0][-1] == 0.0
    env = TextGenEnv(task="copy", reward=lambda text: 0.25)
    assert play(env, "a", index=0)[0][-1] == 0.25


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (lambda t, r, p: math.nan, "non-finite"),
        (lambda t, r, p: math.inf, "non-finite"),
        (lambda t, r, p: "high", "expected floats"),
    ],
)
def test_bad_reward_values_name_the_reward(fn, message):
    def my_reward(text, references, prompt):
        return fn(text, references, prompt)

    env = TextGenEnv(task="copy", reward=my_reward)
    env.reset(seed=0)
    with pytest.raises(RewardError, match=f"'my_reward'.*{message}|{message}.*my_reward"):
        env.step(env.tokenizer.eos_id)


def test_batched_reward_of_wrong_length_names_the_reward():
    @batched
    def short_reward(texts, references, prompts):
        return [1.0] * (len(texts) + 1)

    env = TextGenEnv(task="copy", reward=short_reward)
    env.reset(seed=0)
    with pytest.raises(RewardError, match="'short_reward' returned shape \\(2,\\); expected 1 values"):
        env.step(env.tokenizer.eos_id)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task": "nope"}, "unknown task 'nope'; valid tasks: \\['copy'"),
        ({"reward": "nope"}, "unknown reward 'nope'; valid rewards: \\['bleu'"),
        ({"split": "dev"}, "unknown split 'dev'; valid splits: \\['train', 'validation', 'test'\\]"),
        ({"colour": "red"}, "unknown argument\\(s\\) \\['colour'\\]; valid arguments: \\['task'"),
        ({"sampling": "shuffled"}, "unknown sampling 'shuffled'"),
        ({"max_new_tokens": 0}, "max_new_tokens must be a positive integer"),
        # not "human": with rgb_array declared, gym.make serves "human" itself (HumanRendering wrapper)
        ({"render_mode": "video"}, "unknown render_mode 'video'"),
        ({"task": "copy", "task_kwargs": {"colour": 1}}, "task 'copy' got an unknown argument"),
        ({"reward": 3}, "cannot make a reward from int"),
        ({"invalid_action_penalty": math.nan}, "invalid_action_penalty must be finite"),
    ],
)
def test_bad_arguments_raise_value_errors_naming_the_choices(kwargs, message):
    with pytest.raises(ValueError, match=message), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gym.make's own render-mode warning precedes our error
        gym.make("TextGen-v0", **kwargs)


def test_long_prompts_truncate_with_a_warning_or_fail_when_strict():
    with pytest.warns(UserWarning, match="longer than max_prompt_tokens=2"):
        env = TextGenEnv(task="copy", max_prompt_tokens=2)
    obs, _ = env.reset(seed=0)
    assert obs["prompt_ids"].shape == (2,) and (obs["prompt_ids"] != env.tokenizer.pad_id).all()
    with pytest.raises(ValueError, match="longer than max_prompt_tokens=2.*strict"):
        TextGenEnv(task="copy", max_prompt_tokens=2, strict_prompt_length=True)


def test_user_jsonl_file_works_end_to_end(tmp_path):
    path = tmp_path / "greetings.jsonl"
    rows = [
        f'{{"prompt": "say {w}", "references": ["{w} there", "{w} friend"]}}' for w in "abcdefghijklmnopqrst"
    ]
    path.write_text("\n".join(rows) + "\n")
    env = gym.make("TextGen-v0", task=str(path), reward="bleu")
    _, info = env.reset(seed=0)
    example = env.unwrapped.setup.data.examples[info["example_index"]]
    rewards, info = play(env, example.references[1], index=info["example_index"])
    assert rewards[-1] == pytest.approx(1.0)
    assert info["references"] == example.references
    venv = gym.make_vec("TextGen-v0", num_envs=4, task=str(path))
    venv.reset(seed=0)
    venv.step(np.full(4, venv.unwrapped.tokenizer.eos_id))


def test_malformed_user_file_is_rejected_with_the_line_number(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "references": ["b"]}\n{"prompt": "c", "references": ["d"]\n')
    with pytest.raises(ValueError, match="line 2"):
        gym.make("TextGen-v0", task=str(path))


def test_list_of_examples_is_a_task():
    examples = [(f"q{i}", [f"a{i}"]) for i in range(30)]
    env = gym.make("TextGen-v0", task=examples)
    obs, info = env.reset(seed=0)
    assert env.unwrapped.task.name == "custom"
    assert env.observation_space.contains(obs)


def test_causal_lm_reward_scores_each_token_under_the_users_model():
    import torch

    from lmrl_gym.rewards import CausalLMScoreReward

    torch.manual_seed(0)
    env = TextGenEnv(task="copy", task_kwargs=COPY_SMALL, reward=CausalLMScoreReward(lambda ids: table[ids]))
    tok = env.tokenizer
    table = torch.randn(tok.vocab_size, tok.vocab_size)  # a bigram "model": logits of the next token
    text = "b a c"
    rewards, info = play(env, text, index=0)
    ids = [tok.bos_id, *tok.encode(text), tok.eos_id]
    logp = torch.log_softmax(table.double(), dim=-1)
    expected = [logp[a, b].item() for a, b in zip(ids[:-1], ids[1:], strict=True)]
    assert rewards == pytest.approx(expected, abs=1e-12)
    assert info["reward_components"]["lm"] == pytest.approx(sum(expected), abs=1e-12)


def test_causal_lm_reward_rejects_logits_of_the_wrong_shape():
    import torch

    from lmrl_gym.rewards import CausalLMScoreReward

    env = TextGenEnv(task="copy", reward=CausalLMScoreReward(lambda ids: torch.zeros(3), name="broken"))
    env.reset(seed=0)
    with pytest.raises(ValueError, match="causal LM for reward 'broken' returned logits of shape \\(3,\\)"):
        env.step(4)
