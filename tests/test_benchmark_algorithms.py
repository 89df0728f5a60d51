"""``lmrl-gym bench algorithms``: a tiny run writes its three files with one record per run; bad flags exit 2."""

import json

import pytest

from agents import cli
from agents.benchmark_algorithms import FINETUNE_SETTINGS, SCRATCH_SETTINGS, main, mean_curve

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_tiny_run_writes_the_table_the_records_and_the_curves(tmp_path, capsys):
    argv = ["--tasks", "TextGen-Copy-v0", "--algos", "reinforce", "a2c", "--seeds", "0", "1"]
    argv += ["--timesteps", "300", "--max-examples", "10", "--out", str(tmp_path)]
    # Through the top-level command, which forwards everything after "algorithms".
    assert cli.main(["bench", "algorithms", *argv]) == 0

    assert sorted(p.name for p in tmp_path.iterdir()) == ["learning_curves.png", "results.json", "results.md"]
    assert (tmp_path / "learning_curves.png").stat().st_size > 0
    table = (tmp_path / "results.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| policy")]
    # By default every algorithm fine-tunes the same short MLE start, which is the table's first row.
    assert [row.split("|")[1].strip() for row in rows] == ["MLE start (10 epochs)", "reinforce", "a2c"]
    assert all("±" in row for row in rows[1:])
    header = next(line for line in table.splitlines() if line.startswith("| policy"))
    assert [cell.strip() for cell in header.split("|")[2:7]] == [
        "test mean reward", "test corpus BLEU", "test sentence BLEU", "test chrF", "test exact match",
    ]  # fmt: skip
    assert table in capsys.readouterr().out

    results = json.loads((tmp_path / "results.json").read_text())
    runs = {(r["task"], r["algo"], r["seed"]) for r in results["runs"]}
    assert len(results["runs"]) == len(runs) == 4
    assert runs == {("TextGen-Copy-v0", a, s) for a in ("reinforce", "a2c") for s in (0, 1)}
    start = results["start"]["TextGen-Copy-v0"]
    for record in [*results["runs"], start]:
        for key in ("test_bleu", "test_mean_sentence_bleu", "test_chrf"):
            assert 0.0 <= record[key] <= 100.0
        # The copy env's reward is sentence BLEU / 100, so the two columns carry the same number.
        assert record["test_mean_sentence_bleu"] == pytest.approx(100 * record["test_mean_reward"])
    for record in results["runs"]:
        assert record["timesteps"] >= 300
        # One point per rollout, at increasing step counts.
        steps = [step for step, _ in record["curve"]]
        assert steps and steps == sorted(steps)
    assert start["task_kwargs"] == {"num_symbols": 6, "min_length": 3, "max_length": 3}
    assert start["pretrain_epochs"] == results["config"]["pretrain_epochs"]["TextGen-Copy-v0"] == 10
    assert results["config"]["algo_settings"] == {a: FINETUNE_SETTINGS[a] for a in ("reinforce", "a2c")}


def test_pretrain_epochs_0_is_the_from_scratch_mode(tmp_path):
    runs = {}
    for name, extra in (("scratch", ["--pretrain-epochs", "0"]), ("mle", [])):
        out = tmp_path / name
        argv = ["--tasks", "TextGen-Copy-v0", "--algos", "ppo", "--seeds", "0", "--timesteps", "200"]
        assert main([*argv, "--max-examples", "40", "--out", str(out), *extra]) == 0
        runs[name] = json.loads((out / "results.json").read_text())
        runs[name]["table"] = (out / "results.md").read_text()
    scratch, mle = runs["scratch"], runs["mle"]
    assert "| untrained start |" in scratch["table"] and "| MLE start (10 epochs) |" in mle["table"]
    assert scratch["config"]["algo_settings"] == {"ppo": SCRATCH_SETTINGS["ppo"]}
    assert mle["config"]["algo_settings"] == {"ppo": FINETUNE_SETTINGS["ppo"]}
    # The pretrained start really is trained: measured greedy test mean reward 0.51 against ~0.1 untrained.
    start_reward = {name: run["start"]["TextGen-Copy-v0"]["test_mean_reward"] for name, run in runs.items()}
    assert start_reward["mle"] > start_reward["scratch"] + 0.2, start_reward


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--algos", "dqn"], "invalid choice: 'dqn'"),
        (["--tasks", "TextGen-Nope-v0"], "invalid choice: 'TextGen-Nope-v0'"),
        (["--timesteps", "0"], "must be a positive integer"),
    ],
)
def test_bad_flags_exit_2_naming_the_choices(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    if "invalid choice" in message:
        assert "choose from" in err


def test_mean_curve_averages_curves_sampled_at_different_steps():
    steps, mean, std = mean_curve([[[0, 0.0], [10, 1.0]], [[5, 1.0], [20, 1.0]]])
    # Only [5, 10], which both curves cover; at 5 the first is 0.5 and the second 1.0.
    assert steps[0] == 5 and steps[-1] == 10
    assert mean[0] == pytest.approx(0.75) and std[0] == pytest.approx(0.25)
    assert mean_curve([[[0, 1.0]], []])[0].size == 0
