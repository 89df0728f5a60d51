"""The PPO speed / storage / work benchmark against SB3 runs and its figures mean what they say."""

import pytest

from agents.benchmark_rl import run

pytestmark = pytest.mark.usefixtures("one_thread")


def test_benchmark_rl_measures_both_and_ours_stores_and_computes_less_per_step():
    r = run("TextGen-v0", n_envs=16, timesteps=128, repeats=1, n_layer=1, n_embd=32)
    assert r["ours_steps_per_s"] > 0 and r["sb3_steps_per_s"] > 0
    assert r["speed_ratio"] == pytest.approx(r["ours_steps_per_s"] / r["sb3_steps_per_s"])
    # Packed trajectories vs padded observations per step: far fewer bytes whatever the timing.
    assert r["ours_bytes_per_step"] < 12 and r["sb3_bytes_per_step"] > 60
    assert r["storage_ratio"] < 0.2
    # SB3 re-reads every step's whole context in the rollout and in each epoch; ours reads each once.
    assert r["flops_ratio"] > 3
    assert r["ours_gflops_per_s"] > 0 and r["sb3_gflops_per_s"] > 0
    # The update against the model's own rate on the same episodes in one batch: 16 episodes, PPO's
    # minibatches of 16: one minibatch per epoch, so the update does 4x the limit's work.
    assert r["episodes_per_rollout"] == 16 and r["minibatch_episodes"] == 16
    assert r["update_gflops_per_s"] > 0 and r["limit_gflops_per_s"] > 0
    assert r["update_vs_limit"] == pytest.approx(r["update_gflops_per_s"] / r["limit_gflops_per_s"])
    assert r["update_seconds"] > r["limit_seconds"]


def test_longer_episodes_widen_the_work_gap():
    # SB3 re-reads a context that grows with the episode; ours reads each token once per pass.
    short = run("TextGen-v0", n_envs=16, timesteps=128, repeats=1, n_layer=1, n_embd=32, max_new_tokens=4)
    long = run("TextGen-v0", n_envs=16, timesteps=256, repeats=1, n_layer=1, n_embd=32, max_new_tokens=16)
    assert short["mean_episode_length"] <= 4 < 12 < long["mean_episode_length"] <= 16
    assert long["flops_ratio"] > 1.5 * short["flops_ratio"]


def test_benchmark_rl_rejects_a_bad_episode_cap(capsys):
    from agents.benchmark_rl import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--max-new-tokens", "0"])
    assert exit_info.value.code == 2
    assert "--max-new-tokens: must be >= 1, got 0" in capsys.readouterr().err
