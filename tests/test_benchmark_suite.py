"""``lmrl-gym bench suite``: headroom arithmetic, the bootstrap interval, and the smoke run end to end."""

import json
import math

import numpy as np
import pytest

from agents.algorithms import ALGORITHMS
from agents.bench.suite import (
    MODES,
    SUITE_TASKS,
    bootstrap_interval,
    headroom_closed,
    ppo_budget,
    run_suite,
)
from agents.commands.bench import run_benchmark_command

pytestmark = pytest.mark.usefixtures("one_thread")


def test_headroom_closed_is_the_share_of_the_gap_to_the_best():
    assert headroom_closed(0.7, 0.4) == pytest.approx(50.0)  # 0.3 of the 0.6 left
    assert headroom_closed(0.4, 0.4) == 0.0
    assert headroom_closed(0.1, 0.4) == pytest.approx(-50.0)  # worse than the start: negative
    assert headroom_closed(62.0, 50.0, best=100.0) == pytest.approx(24.0)
    assert math.isnan(headroom_closed(1.0, 1.0))  # nothing left to close


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_more_pairs():
    rng = np.random.default_rng(0)
    few, many = rng.normal(10, 5, size=6).tolist(), rng.normal(10, 5, size=600).tolist()
    low, high = bootstrap_interval(few)
    assert low < np.mean(few) < high
    low_many, high_many = bootstrap_interval(many)
    assert high_many - low_many < (high - low) / 3  # ~ 1 / sqrt(100) of the width
    assert bootstrap_interval([3.0, 3.0, 3.0]) == (3.0, 3.0)
    assert bootstrap_interval(few) == bootstrap_interval(few)  # a fixed generator


def test_offline_budget_is_ppos_episodes_and_optimizer_steps():
    # 64 episodes of 5 tokens per rollout: 10,000 tokens take 32 rollouts; each 4 epochs x 4 minibatches.
    assert ppo_budget(10_000, 5.0) == (32 * 64, 32 * 4 * 4)


def test_every_built_in_task_is_in_the_suite():
    envs = {spec.env_id for spec in SUITE_TASKS.values()}
    assert envs == {
        "TextGen-Copy-v0",
        "TextGen-Reverse-v0",
        "TextGen-Sort-v0",
        "TextGen-Addition-v0",
        "TextGen-SCAN-v0",
        "TextGen-v0",
        "TextGen-Oracle-v0",
    }
    splits = {
        spec.task_kwargs.get("split_name")
        for spec in SUITE_TASKS.values()
        if spec.env_id == "TextGen-SCAN-v0"
    }
    assert splits == {"simple", "length"}
    assert MODES["default"]["seeds"] == (0, 1, 2)


def test_smoke_run_writes_every_algorithm_on_every_smoke_task(tmp_path):
    assert run_benchmark_command("suite", ["--smoke", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    tasks = list(MODES["smoke"]["tasks"])
    assert results["config"]["tasks"] == tasks
    assert {(r["task"], r["algo"]) for r in results["runs"]} == {(t, a) for t in tasks for a in ALGORITHMS}
    for run in results["runs"]:
        start = results["start"][run["task"]]["test_metric"]
        assert 0.0 <= run["test_metric"] <= 1.0
        expected = headroom_closed(run["test_metric"], start)
        assert run["headroom_closed"] == pytest.approx(expected, nan_ok=True)
    assert set(results["summary"]) == set(ALGORITHMS)
    table = (tmp_path / "results.md").read_text()
    for algo in ALGORITHMS:
        assert f"| {algo} |" in table
    assert (
        table.count("| MLE start (") == len(tasks) and table.count("| MLE start |") == 1
    )  # tables, overview
    assert "CPU: " in table and "1 run(s) at once" in table  # the machine the figures are from
    assert (tmp_path / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_suite_arguments_are_named():
    with pytest.raises(ValueError, match="unknown suite task 'nope'; valid: .*copy"):
        run_suite("smoke", tasks=["nope"])
    with pytest.raises(ValueError, match="unknown algorithm 'dqn'"):
        run_suite("smoke", algos=["dqn"])
    with pytest.raises(ValueError, match="unknown mode 'long'"):
        run_suite("long")
    with pytest.raises(SystemExit):
        run_benchmark_command("suite", ["--smoke", "--quick"])
