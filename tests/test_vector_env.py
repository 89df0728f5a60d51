import numpy as np
import pytest
import torch
from gymnasium.error import ResetNeeded
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from lmrl_gym import TextGenEnv, TextGenVectorEnv

EQUIVALENCE_CASES = [
    pytest.param({"task": "copy", "reward": "bleu"}, id="copy-bleu"),
    pytest.param({"task": "scan", "reward": "exact_match"}, id="scan-exact"),
    pytest.param({"task": "oracle", "reward": "lm"}, id="oracle-lm"),
    pytest.param(
        {"task": "numbers", "reward": {"bleu": 1.0, "lm": 0.1}, "shaping": True}, id="numbers-mixed-shaped"
    ),
    pytest.param({"task": "reverse", "reward": "bleu", "max_new_tokens": 4}, id="reverse-length-limit"),
    pytest.param({"task": "sort", "sampling": "sequential"}, id="sort-sequential"),
]


def random_actions(rng, n, vocab, eos_id):
    actions = rng.integers(0, vocab, size=n)
    actions[rng.random(n) < 0.15] = eos_id  # end episodes often enough to exercise autoreset
    return actions


@pytest.mark.parametrize("kwargs", EQUIVALENCE_CASES)
def test_vector_env_equals_sync_vector_env_of_single_envs(kwargs):
    n, steps = 6, 1000
    sync = SyncVectorEnv(
        [lambda i=i: TextGenEnv(env_index=i, num_envs=n, **kwargs) for i in range(n)],
        autoreset_mode=AutoresetMode.SAME_STEP,
    )
    native = TextGenVectorEnv(num_envs=n, **kwargs)
    obs_s, _ = sync.reset(seed=11)
    obs_n, _ = native.reset(seed=11)
    for key in obs_s:
        np.testing.assert_array_equal(obs_s[key], obs_n[key])
    rng = np.random.default_rng(0)
    vocab, eos = native.tokenizer.vocab_size, native.tokenizer.eos_id
    ended = 0
    for _ in range(steps):
        actions = random_actions(rng, n, vocab, eos)
        obs_s, rew_s, term_s, trunc_s, info_s = sync.step(actions)
        obs_n, rew_n, term_n, trunc_n, info_n = native.step(actions)
        for key in obs_s:
            np.testing.assert_array_equal(obs_s[key], obs_n[key])
        np.testing.assert_array_equal(rew_s, rew_n)  # exact, not approximate
        np.testing.assert_array_equal(term_s, term_n)
        np.testing.assert_array_equal(trunc_s, trunc_n)
        if "final_obs" in info_s:
            np.testing.assert_array_equal(info_s["_final_obs"], info_n["_final_obs"])
            mask = info_s["_final_obs"]
            for i in np.flatnonzero(mask):
                for key in obs_s:
                    np.testing.assert_array_equal(info_s["final_obs"][i][key], info_n["final_obs"][i][key])
            for key in ("text", "length_limit", "invalid_action"):
                np.testing.assert_array_equal(
                    info_s["final_info"][key][mask], info_n["final_info"][key][mask]
                )
            ended += int(mask.sum())
    assert ended > 100
    # A second reset without a seed continues each env's sequence of examples identically.
    obs_s, _ = sync.reset()
    obs_n, _ = native.reset()
    np.testing.assert_array_equal(obs_s["prompt_ids"], obs_n["prompt_ids"])


def test_metadata_declares_same_step_autoreset():
    assert TextGenVectorEnv.metadata["autoreset_mode"] is AutoresetMode.SAME_STEP


def test_torch_output_stays_on_the_device():
    venv = TextGenVectorEnv(num_envs=4, task="copy", output="torch")
    obs, _ = venv.reset(seed=0)
    assert isinstance(obs["prefix_ids"], torch.Tensor) and obs["prefix_ids"].dtype == torch.int32
    actions = torch.full((4,), venv.tokenizer.eos_id)
    obs, rewards, terminated, truncated, infos = venv.step(actions)
    assert isinstance(rewards, torch.Tensor) and rewards.dtype == torch.float64
    assert bool(terminated.all()) and "final_obs" in infos


def test_final_info_reports_text_references_and_components():
    venv = TextGenVectorEnv(
        num_envs=3, task="copy", task_kwargs={"num_symbols": 6, "min_length": 3, "max_length": 3}
    )
    venv.reset(seed=0, options={"index": np.array([0, 1, 2])})
    tok = venv.tokenizer
    examples = venv.setup.data.examples
    # env 0 copies its reference, env 1 stops at once, env 2 takes an invalid id
    for step in range(4):
        ref0 = tok.encode(examples[0].references[0]) + [tok.eos_id]
        actions = np.array(
            [ref0[step], tok.eos_id if step == 0 else ref0[step], tok.pad_id if step == 0 else 4]
        )
        obs, rewards, terminated, truncated, infos = venv.step(actions)
        if step == 0:
            assert list(terminated) == [False, True, True]
            assert rewards[2] == -1.0
            assert infos["final_info"]["invalid_action"][2] and not infos["final_info"]["invalid_action"][1]
            assert infos["final_info"]["text"][1] == ""
    assert terminated[0] and rewards[0] == pytest.approx(1.0)
    info = infos["final_info"]
    assert info["text"][0] == examples[0].references[0]
    assert info["references"][0] == examples[0].references
    assert info["reward_components"]["bleu"][0] == pytest.approx(1.0)


def test_bad_actions_and_seeds_raise_value_errors():
    venv = TextGenVectorEnv(num_envs=2, task="copy")
    with pytest.raises(ResetNeeded, match="before reset"):
        venv.step(np.array([4, 4]))
    venv.reset(seed=0)
    with pytest.raises(ValueError, match="action 99 of env 1 is outside the action space"):
        venv.step(np.array([4, 99]))
    with pytest.raises(ValueError, match="must be 2 integer token ids"):
        venv.step(np.array([4, 4, 4]))
    with pytest.raises(ValueError, match="integer token ids, got dtype float"):
        venv.step(np.array([4.0, 4.0]))
    with pytest.raises(ValueError, match="reset got 3 seeds for 2 envs"):
        venv.reset(seed=[1, 2, 3])
    with pytest.raises(ValueError, match="num_envs must be a positive integer"):
        TextGenVectorEnv(num_envs=0, task="copy")
    with pytest.raises(ValueError, match="unknown output 'jax'"):
        TextGenVectorEnv(num_envs=1, task="copy", output="jax")


def test_action_masks_are_per_env():
    venv = TextGenVectorEnv(num_envs=5, task="copy")
    masks = venv.action_masks()
    assert masks.shape == (5, venv.tokenizer.vocab_size) and masks.dtype == bool
    assert not masks[:, venv.tokenizer.pad_id].any() and masks[:, venv.tokenizer.eos_id].all()


@pytest.mark.parametrize("vector", [False, True], ids=["single", "vector"])
def test_reaching_max_new_tokens_terminates_with_the_length_limit_flag(vector):
    """The cut-off is a terminal state (nothing is earned after it), never a truncation to bootstrap."""
    kwargs = {"task": "copy", "max_new_tokens": 3}
    env = TextGenVectorEnv(num_envs=2, **kwargs) if vector else TextGenEnv(**kwargs)
    env.reset(seed=0)
    tok = env.tokenizer
    word = tok.token_to_id["a"]
    for step in range(3):
        if vector:  # env 0 writes until the cut-off; env 1 ends with eos at the last step
            actions = np.array([word, tok.eos_id if step == 2 else word])
            _, _, terminated, truncated, info = env.step(actions)
        else:
            _, _, terminated, truncated, info = env.step(word)
        if step < 2:
            assert not np.any(terminated) and not np.any(truncated)
    if vector:
        assert list(terminated) == [True, True] and list(truncated) == [False, False]
        assert list(info["final_info"]["length_limit"]) == [True, False]
        assert list(info["final_info"]["_length_limit"]) == [True, True]
    else:
        assert terminated and not truncated and info["length_limit"] is True


def test_episodes_ended_by_eos_or_an_invalid_id_are_not_length_limited():
    env = TextGenEnv(task="copy", max_new_tokens=3)
    env.reset(seed=0)
    *_, terminated, _, info = env.step(env.tokenizer.eos_id)
    assert terminated and info["length_limit"] is False
    env.reset()
    *_, terminated, _, info = env.step(env.tokenizer.pad_id)
    assert terminated and info["invalid_action"] and info["length_limit"] is False


def test_sequential_sampling_covers_distinct_rows_across_envs():
    """8 envs x 8 episodes visit 64 distinct rows (the envs used to replay each other's rows: 15 of 64)."""
    n, episodes = 8, 8
    venv = TextGenVectorEnv(num_envs=n, task="copy", sampling="sequential")
    venv.reset(seed=0)
    seen = [venv.example_index.clone()]
    eos = np.full(n, venv.tokenizer.eos_id)
    for _ in range(episodes - 1):
        venv.step(eos)
        seen.append(venv.example_index.clone())
    rows = torch.stack(seen)
    assert len(set(rows.flatten().tolist())) == n * episodes
    # Env i walks seed + i + k * num_envs: together, consecutive rows.
    assert sorted(rows.flatten().tolist()) == list(range(n * episodes))
    singles = [TextGenEnv(task="copy", sampling="sequential", env_index=i, num_envs=n) for i in range(n)]
    for i, env in enumerate(singles):
        walked = [env.reset(seed=i)[1]["example_index"]] + [env.reset()[1]["example_index"] for _ in range(7)]
        assert walked == rows[:, i].tolist()


@pytest.mark.parametrize(
    "env_index, num_envs, message",
    [
        (2, 2, "0 <= env_index < num_envs"),
        (-1, 4, "0 <= env_index < num_envs"),
        (0.5, 2, "env_index must be"),
    ],
)
def test_bad_env_index_is_a_clear_error(env_index, num_envs, message):
    with pytest.raises(ValueError, match=message):
        TextGenEnv(task="copy", env_index=env_index, num_envs=num_envs)
