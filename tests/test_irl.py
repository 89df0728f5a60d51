"""Inverse RL: agents.IRL, its evaluation helpers, the `lmrl-gym irl` command and the acceptance run."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import lmrl_gym  # noqa: F401
from agents.algorithms import PPO
from agents.cli import main as cli_main
from agents.irl import IRL
from agents.irl_evaluation import (
    average_ranks,
    oracle_irl_experiment,
    oracle_probe_set,
    permutation_test,
    roc_auc,
    spearman,
)
from lmrl_gym.rewards import RewardNetwork
from lmrl_gym.tokenizer import Tokenizer

ENV_ID = "TextGen-Oracle-v0"
SMALL = {"n_layer": 1, "n_embd": 32, "n_head": 2}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def env():
    return gym.make(ENV_ID)


def make_irl(env, **kwargs) -> IRL:
    kwargs = {
        "n_envs": 16,
        "seed": 0,
        "device": "cpu",
        "policy_kwargs": SMALL,
        "reward_kwargs": SMALL,
    } | kwargs
    return IRL("TransformerPolicy", env, **kwargs)


def parameters(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in module.parameters()])


# ---------------------------------------------------------------------- training


@pytest.mark.parametrize("loss", ["maxent", "airl"])
@pytest.mark.parametrize("policy_algorithm", ["ppo", "reinforce"])
def test_learn_updates_reward_and_policy_and_logs(env, loss, policy_algorithm):
    irl = make_irl(env, loss=loss, policy_algorithm=policy_algorithm)
    reward_before, policy_before = parameters(irl.reward_model), parameters(irl.policy)
    seen = {}

    def record(local_vars, _globals):
        seen.update(local_vars["reward_stats"])
        return True

    irl.learn(300, callback=record)
    assert irl.num_timesteps >= 300
    assert not torch.equal(parameters(irl.reward_model), reward_before)
    assert not torch.equal(parameters(irl.policy), policy_before)
    assert {"reward_loss", "expert_return", "sample_return", "return_gap"} <= set(seen)
    assert all(np.isfinite(v) for k, v in seen.items() if k != "effective_samples")


def test_the_kl_leash_holds_inside_irl(env):
    """IRL drives the policy algorithm's updates without its ``learn``; the frozen reference must still be
    the policy as IRL found it, so the leash charges for moving away (it charged nothing: the current policy
    served as its own reference, |log pi_old - log pi_ref| <= 2.4e-7 over 7 updates)."""
    irl = make_irl(env, algorithm_kwargs={"kl_coef": 1.0, "target_kl_penalty": 5.0})
    start = parameters(irl.policy)
    kls = []

    def record(local_vars, _globals):
        kls.append(local_vars["policy_stats"]["kl"])
        return True

    irl.learn(7 * 16 * 8, callback=record)
    reference = irl.algorithm.reference_policy
    assert reference is not None and torch.equal(parameters(reference), start)
    assert not torch.equal(parameters(irl.policy), start)
    assert max(abs(kl) for kl in kls[1:]) > 1e-3, kls  # per-episode KL once the policy has moved


def test_reward_updates_lower_the_reward_loss_on_a_fixed_batch(env):
    """Reward steps descend the max-ent loss: on the same rollout and the same demonstrations it falls."""
    irl = make_irl(env, reward_steps=1)
    traj = irl.algorithm.collect_rollout()
    state = irl.generator.get_state()  # the generator picks the demonstrations of a reward step
    before = float(irl.reward_loss(traj)[0].detach())
    for _ in range(30):
        irl.generator.set_state(state)
        irl.update_reward(traj)
    irl.generator.set_state(state)
    after = float(irl.reward_loss(traj)[0].detach())
    print(f"reward loss {before:.3f} -> {after:.3f}")
    assert after < before - 1.0  # measured 56.6 -> 50.1


def test_frozen_reward_trains_only_the_policy(env):
    irl = make_irl(env)
    reward_before, policy_before = parameters(irl.reward_model), parameters(irl.policy)
    irl.learn(200, train_reward=False)
    assert torch.equal(parameters(irl.reward_model), reward_before)
    assert not torch.equal(parameters(irl.policy), policy_before)


def test_same_seed_twice_is_identical(env):
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        irl = make_irl(env)
        irl.learn(300)
        runs.append((parameters(irl.reward_model), parameters(irl.policy)))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


def test_callback_returning_false_stops(env):
    irl = make_irl(env)
    irl.learn(10_000, callback=lambda _locals, _globals: False)
    assert irl.num_timesteps < 200  # one iteration of 16 episodes


def test_saved_reward_serves_gym_make_and_matches_score(env, tmp_path):
    irl = make_irl(env)
    irl.learn(200)
    reward_path, policy_path = irl.save(tmp_path / "run")
    learned_env = gym.make(ENV_ID, reward="learned", reward_model=reward_path)
    obs, _ = learned_env.reset(seed=1)
    tok = learned_env.unwrapped.tokenizer
    words = ["w3", "w1", "w4"]
    paid = 0.0
    for token in [tok.token_to_id[w] for w in words] + [tok.eos_id]:
        _, reward, terminated, _, info = learned_env.step(token)
        paid += reward
    assert terminated
    assert info["reward_components"]["learned"] == pytest.approx(paid, abs=1e-5)
    prompt = tok.decode(obs["prompt_ids"])
    assert paid == pytest.approx(float(irl.score([prompt], [" ".join(words)])[0]), abs=1e-4)
    # the sampler reloads as a normal PPO checkpoint
    assert PPO.load(policy_path, env=env).policy.tokenizer == tok
    reloaded = RewardNetwork.load(reward_path)
    assert torch.equal(parameters(reloaded), parameters(irl.reward_model.cpu()))


# ---------------------------------------------------------------------- bad input


def test_empty_demonstrations_are_rejected(env):
    with pytest.raises(ValueError, match="demonstrations must not be empty"):
        make_irl(env, demonstrations=[])


def test_demonstrations_outside_the_vocabulary_are_rejected(env):
    with pytest.raises(
        ValueError, match="demonstration 1 has the token 'zebra', which is not in the vocabulary"
    ):
        make_irl(env, demonstrations=["w1 w2", "w3 zebra"])
    with pytest.raises(ValueError, match="demonstration 0 has token id 999"):
        make_irl(env, demonstrations=[[5, 999]])
    with pytest.raises(ValueError, match="demonstration 0 has token id 1"):
        make_irl(env, demonstrations=[[5, 1]])  # bos is not an action
    with pytest.raises(ValueError, match="demonstration 0 is a int"):
        make_irl(env, demonstrations=[7])


def test_a_reward_model_for_another_vocabulary_is_rejected(env):
    other = Tokenizer(["<pad>", "<bos>", "<eos>", "<unk>", "a", "b"])
    with pytest.raises(ValueError, match="another vocabulary"):
        make_irl(env, reward_model=RewardNetwork.for_tokenizer(other, 32))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"loss": "gail"}, "unknown IRL loss 'gail'"),
        ({"policy_algorithm": "a3c"}, "unknown policy_algorithm 'a3c'"),
        ({"reward_steps": 0}, "reward_steps must be a positive integer"),
        ({"alpha": -1.0}, "alpha must be a finite number >= 0"),
        ({"reward_learning_rate": 0.0}, "reward_learning_rate must be > 0"),
    ],
)
def test_bad_settings_are_rejected(env, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_irl(env, **kwargs)


def test_total_timesteps_must_be_positive(env):
    with pytest.raises(ValueError, match="total_timesteps must be a positive integer"):
        make_irl(env).learn(0)


# ---------------------------------------------------------------------- evaluation helpers


def test_rank_statistics_on_known_cases():
    np.testing.assert_array_equal(average_ranks([10, 30, 20, 20]), [1, 4, 2.5, 2.5])
    x = np.arange(50.0)
    assert spearman(x, np.exp(x / 10)) == pytest.approx(1.0)
    assert spearman(x, -(x**3)) == pytest.approx(-1.0)
    assert roc_auc([3, 4, 5], [0, 1, 2]) == 1.0
    assert roc_auc([0, 1, 2], [3, 4, 5]) == 0.0
    assert roc_auc([1, 1], [1, 1]) == 0.5
    assert roc_auc([2, 0], [1]) == 0.5


def test_permutation_test_separates_shifted_samples_only():
    rng = np.random.default_rng(0)
    shifted = permutation_test(rng.normal(1.0, 1.0, 200), rng.normal(0.0, 1.0, 200), np.random.default_rng(1))
    same = [
        permutation_test(rng.normal(size=50), rng.normal(size=50), np.random.default_rng(i), 2000)
        for i in range(40)
    ]
    assert shifted < 0.001
    assert 0.2 < float(np.mean(same)) < 0.8  # p is uniform under the null
    with pytest.raises(ValueError, match="non-empty"):
        permutation_test([], [1.0], rng)


@pytest.mark.parametrize("random_lengths", ["uniform", "matched"])
def test_probe_set_groups(env, random_lengths):
    task = env.unwrapped.task
    prompts, texts, group = oracle_probe_set(
        task, 50, np.random.default_rng(0), random_lengths=random_lengths
    )
    assert len(prompts) == len(texts) == 150 and np.bincount(group).tolist() == [50, 50, 50]
    truth = task.log_prob(prompts, texts)
    assert np.all(np.isfinite(truth))
    oracle_lengths = [len(t.split()) for t in texts[:50]]
    # perturbed: real continuations with some words replaced; most differ from every real one drawn
    assert all(1 <= len(t.split()) for t in texts[50:100])
    assert sum(t not in texts[:50] for t in texts[50:100]) > 25
    random_lengths_seen = [len(t.split()) for t in texts[100:]]
    if random_lengths == "uniform":
        assert np.mean(random_lengths_seen) > np.mean(oracle_lengths)  # long sequences dominate by count
    assert truth[group == 0].mean() > truth[group == 1].mean() > truth[group == 2].mean()


# ---------------------------------------------------------------------- command line


def test_cli_irl_writes_the_reward_model_and_policy(tmp_path, capsys):
    out = tmp_path / "irl"
    code = cli_main(
        [
            "irl",
            "--timesteps",
            "200",
            "--n-envs",
            "16",
            "--n-embd",
            "32",
            "--out",
            str(out),
            "--no-progress-bar",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    assert {"reward_model.pt", "policy.zip", "progress.csv"} <= {p.name for p in out.iterdir()}
    printed = capsys.readouterr().out
    assert "Spearman with oracle log-prob" in printed
    gym.make(ENV_ID, reward="learned", reward_model=out / "reward_model.pt")


def test_cli_irl_reads_a_demonstrations_file_and_rejects_bad_ones(tmp_path, capsys):
    demos = tmp_path / "demos.txt"
    demos.write_text("w1 w2\tw3 w4 w5\nw6 w7\n", encoding="utf-8")
    code = cli_main(
        [
            "irl",
            "--demonstrations",
            str(demos),
            "--timesteps",
            "100",
            "--n-envs",
            "8",
            "--n-embd",
            "32",
            "--out",
            str(tmp_path / "a"),
            "--no-progress-bar",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    demos.write_text("w1 unknownword\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["irl", "--demonstrations", str(demos), "--out", str(tmp_path / "b")])
    assert exit_info.value.code == 2
    assert "not in the vocabulary" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["irl", "--demonstrations", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "c")])
    assert exit_info.value.code == 2


# ---------------------------------------------------------------------- acceptance (slow)


@pytest.mark.slow
def test_irl_recovers_the_oracle_and_ppo_on_the_learned_reward_lowers_oracle_nll(tmp_path):
    """Issue 5's acceptance on the oracle task, printed by `pytest -s -m slow tests/test_irl.py`:
    Spearman >= 0.6 with the oracle log-prob (untrained: near 0), expert-vs-random AUC >= 0.9, and a fresh
    PPO policy on the frozen learned reward lowers the oracle NLL of its samples (p < 0.05)."""
    result = oracle_irl_experiment(
        tmp_path, irl_timesteps=60_000, ppo_timesteps=30_000, n_samples=300, seed=0
    )
    print(
        "\n" + "\n".join(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}" for k, v in result.items())
    )
    assert abs(result["spearman_untrained"]) < 0.3
    assert result["spearman"] >= 0.7  # measured 0.889 / 0.887 / 0.875 (seeds 0-2); the issue asks >= 0.6
    assert result["auc"] >= 0.92  # measured 0.997 / 0.994 / 0.992 (seeds 0-2); the issue asks >= 0.9
    assert result["nll_after"] < 0.5 * result["nll_before"]  # measured 126 -> 7.0 nats (seed 0)
    assert result["p_value"] < 0.01
