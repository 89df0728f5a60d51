"""The ``lmrl-gym`` command line (``agents.commands.cli``) and the end-to-end demo (``agents.commands.demo``) on
tiny budgets; the old entry points (``python -m agents.cli`` / ``agents.demo``) still run them."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agents.commands import cli, demo

# A 6-symbol copy task of length 3: small enough that a train + eval run takes seconds.
TASK_KWARGS = json.dumps({"num_symbols": 6, "min_length": 3, "max_length": 3})
TINY_MODEL = ["--n-layer", "1", "--n-embd", "32", "--device", "cpu"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One tiny ``train`` run shared by the tests that read its files; returns (out folder, stdout)."""
    out = tmp_path_factory.mktemp("run")
    result = subprocess.run(
        [sys.executable, "-m", "agents.cli", "train", "--env", "TextGen-Copy-v0", "--task-kwargs", TASK_KWARGS,
         "--algo", "ppo", "--pretrain-epochs", "1", "--timesteps", "200", "--n-envs", "16", "--seed", "0",
         "--eval-examples", "20", "--eval-freq", "2", "--no-progress-bar", "--out", str(out), *TINY_MODEL],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out, result.stdout


def test_train_writes_its_files_and_checks_validation(trained_run: tuple[Path, str]) -> None:
    out, stdout = trained_run
    for name in ("model.zip", "policy.pt", "best_policy.pt", "progress.csv", "learning_curve.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(out / "progress.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows, "progress.csv has no rows"
    assert cli.REWARD_COLUMN in rows[0] and cli.TIMESTEPS_COLUMN in rows[0]
    assert float(rows[-1][cli.TIMESTEPS_COLUMN]) >= 200
    # Validation checks every 2 rollouts were logged, and the best policy is evaluated next to the final one.
    checks = [row[cli.VALIDATION_COLUMN] for row in rows if row.get(cli.VALIDATION_COLUMN)]
    assert len(checks) == len(rows) // 2 >= 2
    assert "| metric | before RL | after RL (final) | best on validation |" in stdout
    assert "| bleu |" in stdout


def test_train_without_validation_checks_reports_the_final_policy(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code = cli.main(
        ["train", "--env", "TextGen-Copy-v0", "--task-kwargs", TASK_KWARGS, "--algo", "a2c",
         "--timesteps", "100", "--n-envs", "16", "--eval-examples", "10", "--eval-freq", "0",
         "--no-progress-bar", "--out", str(out), *TINY_MODEL]
    )  # fmt: skip
    assert code == 0
    assert (out / "policy.pt").is_file() and not (out / "best_policy.pt").exists()


def saved_arguments(model_zip: Path) -> dict:
    """The constructor arguments a ``train`` run gave its algorithm, as its checkpoint stores them."""
    import zipfile

    with zipfile.ZipFile(model_zip) as archive:
        return json.loads(archive.read("algorithm.json"))["arguments"]


def test_pretraining_switches_rl_to_the_fine_tuning_defaults(trained_run: tuple[Path, str]) -> None:
    out, stdout = trained_run
    # The fixture pretrains (--pretrain-epochs 1) and passes neither --learning-rate nor --kl-coef.
    arguments = saved_arguments(out / "model.zip")
    assert arguments["learning_rate"] == cli.FINETUNE_LEARNING_RATES["ppo"] == 1e-5
    assert arguments["kl_coef"] == cli.FINETUNE_KL_COEF == 0.01
    assert "learning_rate 1e-05, kl_coef 0.01" in stdout


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        # From scratch: the algorithm's own learning rate (not passed) and no leash.
        ([], {"kl_coef": 0.0}),
        (["--pretrain-epochs", "2"], {"learning_rate": 1e-5, "kl_coef": 0.01}),
        (["--pretrain-epochs", "2", "--algo", "a2c"], {"learning_rate": 1e-4, "kl_coef": 0.01}),
        # Explicit flags win over the fine-tuning defaults, including an explicit 0.
        (["--pretrain-epochs", "2", "--learning-rate", "3e-4"], {"learning_rate": 3e-4, "kl_coef": 0.01}),
        (["--pretrain-epochs", "2", "--kl-coef", "0"], {"learning_rate": 1e-5, "kl_coef": 0.0}),
        (["--learning-rate", "2e-3", "--kl-coef", "0.2"], {"learning_rate": 2e-3, "kl_coef": 0.2}),
    ],
)
def test_rl_settings_defaults_and_explicit_flags(argv: list[str], expected: dict) -> None:
    args = cli.build_parser().parse_args(["train", "--out", "x", *argv])
    assert cli.rl_settings(args) == expected


def test_explicit_flags_reach_the_algorithm_after_pretraining(tmp_path: Path) -> None:
    code = cli.main(
        ["train", "--env", "TextGen-Copy-v0", "--task-kwargs", TASK_KWARGS, "--algo", "reinforce",
         "--pretrain-epochs", "1", "--learning-rate", "3e-4", "--kl-coef", "0", "--timesteps", "50",
         "--n-envs", "8", "--eval-examples", "5", "--no-progress-bar", "--out", str(tmp_path), *TINY_MODEL]
    )  # fmt: skip
    assert code == 0
    arguments = saved_arguments(tmp_path / "model.zip")
    assert arguments["learning_rate"] == 3e-4 and arguments["kl_coef"] == 0.0


@pytest.mark.parametrize(
    ("algo", "leash"),
    [("grpo", {"beta": 0.01}), ("rloo", {"kl_coef": 0.01}), ("nlpo", {"kl_coef": 0.01}),
     ("filtered_bc", {"kl_coef": 0.0}), ("ilql", {"kl_coef": 0.0})],
)  # fmt: skip
def test_train_runs_every_algorithm_after_pretraining_with_its_own_kl_term(
    algo: str, leash: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """GRPO's leash is beta (its loss), the offline algorithms have none; --timesteps counts their gradient
    steps. ``eval`` reads back what ``train`` saved: for ILQL, the policy that acts with its Q-values."""
    code = cli.main(
        ["train", "--env", "TextGen-Copy-v0", "--task-kwargs", TASK_KWARGS, "--algo", algo,
         "--pretrain-epochs", "1", "--timesteps", "32", "--n-envs", "8", "--eval-examples", "5",
         "--eval-freq", "0", "--no-progress-bar", "--out", str(tmp_path), *TINY_MODEL]
    )  # fmt: skip
    assert code == 0
    arguments = saved_arguments(tmp_path / "model.zip")
    for key, value in leash.items():
        assert arguments[key] == value
    assert arguments["learning_rate"] == cli.FINETUNE_LEARNING_RATES[algo]
    policy = tmp_path / ("policy" if algo == "ilql" else "policy.pt")
    assert policy.exists()
    capsys.readouterr()
    assert cli.main(["eval", "--checkpoint", str(policy), "--env", "TextGen-Copy-v0", "--task-kwargs",
                     TASK_KWARGS, "--max-examples", "5", "--device", "cpu"]) == 0  # fmt: skip
    assert "| bleu |" in capsys.readouterr().out


def test_train_help_documents_the_fine_tuning_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "with --pretrain-epochs > 0 the fine-tuning rate: ppo 1e-05, a2c 0.0001, reinforce 0.0001" in text
    assert "0.01 with --pretrain-epochs > 0" in text


def test_train_honours_task_kwargs(trained_run: tuple[Path, str]) -> None:
    """The checkpoint was built for the 6-symbol task: its tokenizer is not the default copy task's."""
    import gymnasium as gym

    from agents.policies import TransformerPolicy

    out, _ = trained_run
    policy = TransformerPolicy.load(out / "policy.pt", device="cpu")
    small = gym.make("TextGen-Copy-v0", task_kwargs=json.loads(TASK_KWARGS))
    policy.check_env(small)
    with pytest.raises(ValueError):
        policy.check_env(gym.make("TextGen-Copy-v0"))


def test_eval_prints_the_table(trained_run: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = trained_run
    code = cli.main(
        ["eval", "--checkpoint", str(out / "policy.pt"), "--env", "TextGen-Copy-v0", "--task-kwargs", TASK_KWARGS,
         "--method", "beam", "--beam-size", "2", "--max-examples", "10", "--device", "cpu"]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0
    assert "| metric | beam2 (test) |" in printed
    assert "| exact_match |" in printed and "| count | 10 |" in printed


def test_eval_rejects_a_checkpoint_of_another_env(
    trained_run: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = trained_run
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["eval", "--checkpoint", str(out / "policy.pt"), "--env", "TextGen-Copy-v0"])
    assert exit_info.value.code == 2
    assert "argument --checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--algo", "dqn", "--out", "x"], "argument --algo: invalid choice: 'dqn' (choose from 'a2c', 'filtered_bc', 'grpo', 'ilql', 'nlpo', 'ppo', 'reinforce', 'rloo')"),
        (["train", "--arch", "rnn", "--out", "x"], "argument --arch: invalid choice: 'rnn' (choose from 'causal', 'seq2seq')"),
        (["train", "--policy", "MlpPolicy", "--out", "x"], "argument --policy: must be 'transformer' (our transformer, built for the env) or 'hf:PATH_OR_NAME' (a transformers model by local folder or hub name, e.g. hf:gpt2), got 'MlpPolicy'"),
        (["train", "--policy", "hf:", "--out", "x"], "argument --policy: must be 'transformer'"),
        (["train", "--tokenizer", "a", "--tokenizer", "b", "--out", "x"], "argument --tokenizer: given twice; give it once"),
        (["train", "--timesteps", "0", "--out", "x"], "argument --timesteps: must be a positive integer, got 0"),
        (["train", "--timesteps", "-5", "--out", "x"], "argument --timesteps: must be a positive integer, got -5"),
        (["train", "--env", "CartPole-v1", "--out", "x"], "argument --env: invalid choice: 'CartPole-v1'"),
        (["train", "--task-kwargs", "[1, 2]", "--out", "x"], "argument --task-kwargs: must be a JSON object"),
        (["train", "--env-kwargs", "{max_new_tokens: 6}", "--out", "x"], "argument --env-kwargs: must be a JSON object, got '{max_new_tokens: 6}' (Expecting property name enclosed in double quotes)"),
        (["eval", "--checkpoint", "p.pt", "--env-kwargs", '{"max_tokens": 6, "seed": 1}'], "argument --env-kwargs: unknown key(s) 'max_tokens', 'seed'; valid keys: task, reward, max_new_tokens,"),
        (["irl", "--env-kwargs", '{"render_mode": "ansi"}', "--out", "x"], "argument --env-kwargs: 'render_mode' cannot be set here"),
        (["train", "--env-kwargs", '{"split": "test"}', "--out", "x"], "argument --env-kwargs: 'split' cannot be set here: each command picks its splits"),
        (["train", "--task", "copy", "--env-kwargs", '{"task": "sort"}', "--out", "x"], "argument --task: 'task' is also given in --env-kwargs; give it once"),
        (["irl", "--reward", "bleu", "--env-kwargs", '{"reward": "lm"}', "--out", "x"], "argument --reward: 'reward' is also given in --env-kwargs; give it once"),
        (["train", "--task-kwargs", "{}", "--env-kwargs", '{"task_kwargs": {}}', "--out", "x"], "argument --task-kwargs: 'task_kwargs' is also given in --env-kwargs; give it once"),
        (["train", "--task", "copy", "--task", "sort", "--out", "x"], "argument --task: given twice; give it once"),
        (["train", "--reward", "rouge", "--out", "x"], "argument --reward: invalid choice: 'rouge' (choose from 'bleu', 'exact_match', 'learned', 'lm')"),
        (["train", "--task", "no/such.jsonl", "--out", "x"], "cannot make TextGen-v0 with task='no/such.jsonl': [Errno 2] No such file or directory"),
        (["train", "--env", "TextGen-Copy-v0", "--env-kwargs", '{"max_new_tokens": 0}', "--out", "x"], "cannot make TextGen-Copy-v0 with max_new_tokens=0: max_new_tokens must be a positive integer"),
        (["eval", "--checkpoint", "no/such/policy.pt"], "argument --checkpoint: no such file or folder: no/such/policy.pt"),
        (["bench", "gpu"], "argument benchmark: invalid choice: 'gpu' (choose from 'env', 'decoding', 'algorithms', 'suite', 'ppo-vs-sb3', 'vs-trl')"),
        (["fly"], "invalid choice: 'fly'"),
    ],
)  # fmt: skip
def test_bad_input_exits_2_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.strip().splitlines()[-1].startswith("lmrl-gym"), "the last line is argparse's one-line error"


def test_unknown_task_kwargs_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--env", "TextGen-Copy-v0", "--task-kwargs", '{"no_such_option": 1}',
                  "--out", str(tmp_path)])  # fmt: skip
    assert exit_info.value.code == 2
    message = "cannot make TextGen-Copy-v0 with task_kwargs={'no_such_option': 1}: task 'copy' got an unknown"
    assert message in capsys.readouterr().err


def write_examples_file(path: Path) -> Path:
    """A JSON Lines task of 40 tiny examples (prompt "a b", reference "b a"), splits given: 30 / 4 / 6."""
    letters = "abcdefgh"
    pairs = [(x, y) for x in letters for y in letters if x != y][:40]
    splits = ["train"] * 30 + ["validation"] * 4 + ["test"] * 6
    lines = [
        json.dumps({"prompt": f"{x} {y}", "references": [f"{y} {x}"], "split": split})
        for (x, y), split in zip(pairs, splits, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


ENV_FLAGS_EXPECTED = {
    "task_kwargs": {"level": "word"},
    "max_new_tokens": 6,
    "reward": "exact_match",
    "tokenizer": "my-tokenizer",
}


@pytest.mark.parametrize(
    "command",
    [
        ["train", "--out", "x"],
        ["eval", "--checkpoint", __file__],  # any existing file: gym.make is stopped before it is read
        ["irl", "--out", "x"],
    ],
)
def test_every_command_passes_the_env_arguments_to_gym_make(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--task, --reward, --task-kwargs, --tokenizer and --env-kwargs reach gym.make, merged, in train, eval and irl
    (the validation checks and the other splits are built from that env's ``setup.kwargs``)."""
    import gymnasium as gym

    calls: list[tuple[str, dict]] = []

    class Stop(Exception):
        pass

    def recording_make(env_id: str, **kwargs):
        calls.append((env_id, kwargs))
        raise Stop

    monkeypatch.setattr(gym, "make", recording_make)
    with pytest.raises(Stop):
        cli.main(
            [*command, "--env", "TextGen-Copy-v0", "--task", "data.jsonl", "--task-kwargs", '{"level": "word"}',
             "--tokenizer", "my-tokenizer", "--env-kwargs", '{"max_new_tokens": 6, "reward": "exact_match"}']
        )  # fmt: skip
    assert calls == [("TextGen-Copy-v0", {"task": "data.jsonl", **ENV_FLAGS_EXPECTED})]


def test_train_and_eval_on_a_user_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's command on a tiny budget: the file's task, the reward and max_new_tokens reach the
    training env, the validation checks and the test evaluation; eval needs the same env arguments."""
    from agents.policies import TransformerPolicy

    data = write_examples_file(tmp_path / "my.jsonl")
    env_flags = ["--env", "TextGen-v0", "--task", str(data), "--reward", "exact_match",
                 "--env-kwargs", '{"max_new_tokens": 6}']  # fmt: skip
    out = tmp_path / "run"
    code = cli.main(
        ["train", *env_flags, "--timesteps", "100", "--n-envs", "16", "--eval-freq", "1", "--no-progress-bar",
         "--out", str(out), *TINY_MODEL]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0
    policy = TransformerPolicy.load(out / "policy.pt", device="cpu")
    assert policy.max_new_tokens == 6 and policy.tokenizer.vocab_size == 4 + 8  # specials + the 8 letters
    assert "| count | 6 | 6 | 6 |" in printed  # the file's 6 test examples, for each of the three rows
    rows = dict(re.findall(r"^\| (exact_match|mean_reward) \| (.*) \|$", printed, flags=re.M))
    assert rows["mean_reward"] == rows["exact_match"]  # the reward is exact match
    with open(out / "progress.csv", newline="") as f:  # the checks ran, on the file's validation split
        assert any(row.get(cli.VALIDATION_COLUMN) for row in csv.DictReader(f))

    assert cli.main(["eval", "--checkpoint", str(out / "policy.pt"), *env_flags, "--split", "validation",
                     "--device", "cpu"]) == 0  # fmt: skip
    assert "| count | 4 |" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:  # without max_new_tokens the env does not fit the policy
        cli.main(["eval", "--checkpoint", str(out / "policy.pt"), "--task", str(data), "--device", "cpu"])
    assert exit_info.value.code == 2
    assert (
        "give eval the --env, --task, --task-kwargs, --tokenizer and --env-kwargs" in capsys.readouterr().err
    )


def test_bench_parses_each_benchmarks_flags_and_runs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import agents.bench.decoding
    import agents.bench.ppo_vs_sb3
    import lmrl_gym.benchmark

    calls: list[tuple[str, object]] = []
    monkeypatch.setattr(lmrl_gym.benchmark, "main", lambda argv: calls.append(("env", argv)))
    for name, module in (("decoding", agents.bench.decoding), ("ppo-vs-sb3", agents.bench.ppo_vs_sb3)):
        monkeypatch.setattr(module, "run", lambda name=name, **settings: calls.append((name, settings)))
        monkeypatch.setattr(module, "format_report", lambda result, settings: "table")
    assert cli.main(["bench", "env", "--num-envs", "8", "--repeats", "1"]) == 0
    assert cli.main(["bench", "decoding", "--batch", "4"]) == 0
    assert cli.main(["bench", "ppo-vs-sb3", "--max-new-tokens", "16"]) == 0
    assert calls[0] == ("env", ["--num-envs", "8", "--repeats", "1"])
    assert calls[1][0] == "decoding" and calls[1][1]["batch"] == 4 and calls[1][1]["new_tokens"] == 64
    assert calls[2][0] == "ppo-vs-sb3" and calls[2][1]["max_new_tokens"] == 16


def test_old_entry_points_are_the_new_modules() -> None:
    import agents.bench.ppo_vs_sb3
    import agents.benchmark
    import agents.benchmark_rl
    import agents.cli
    import agents.commands.cli
    import agents.commands.demo
    import agents.demo

    assert agents.cli is agents.commands.cli and agents.demo is agents.commands.demo
    assert agents.benchmark_rl.run is agents.bench.ppo_vs_sb3.run and callable(agents.benchmark.main)


def test_console_script_is_declared() -> None:
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert 'lmrl-gym = "agents.commands.cli:main"' in text


@pytest.mark.parametrize("eval_freq", [0, 1])
def test_demo_runs_on_a_tiny_budget(tmp_path: Path, eval_freq: int) -> None:
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "agents.demo", "--env", "TextGen-Copy-v0", "--task-kwargs", TASK_KWARGS,
         "--pretrain-examples", "64", "--timesteps", "100", "--n-envs", "16", "--eval-examples", "10",
         "--eval-freq", str(eval_freq), "--beam-size", "2", "--no-progress-bar", "--out", str(out),
         *TINY_MODEL],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # With validation checks the best policy on validation is kept and reported; without, the final one.
    assert (out / "best_policy.pt").exists() is bool(eval_freq)
    reported = re.search(r"after RL: the (best of \d+ validation checks|final policy)", result.stdout)
    assert reported and reported.group(1).startswith("best" if eval_freq else "final")
    assert (out / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"learning curve: {out / 'learning_curve.png'}" in result.stdout
    for row in ("greedy BLEU", "beam-2 BLEU", "exact match", "mean reward"):
        assert f"| {row}" in result.stdout
    # The table names what PPO maximised: the demo's default, half BLEU and half exact match.
    assert (
        'reward (what PPO maximised, the table\'s mean reward): {"bleu": 0.5, "exact_match": 0.5}'
        in result.stdout
    )


def test_demo_pretrain_subset_lowers_the_loss() -> None:
    """The brief MLE start trains: after one pass over 1024 number pairs the loss is well below the
    untrained model's (about log of the vocabulary size)."""
    import math

    import torch

    from agents.policies import TransformerPolicy

    torch.manual_seed(0)
    policy = TransformerPolicy.for_env("TextGen-v0", n_layer=1, n_embd=32, device="cpu")
    assert math.isnan(demo.pretrain_subset(policy, "TextGen-v0", 0))
    loss = demo.pretrain_subset(policy, "TextGen-v0", 1024, learning_rate=3e-3)
    assert loss < 0.8 * math.log(policy.tokenizer.vocab_size)


def test_learning_curve_reads_training_rows_and_validation_checks(tmp_path: Path) -> None:
    progress = tmp_path / "progress.csv"
    progress.write_text(
        "time/total_timesteps,rollout/ep_rew_mean,eval/mean_reward\n"
        "100,0.1,\n"
        "200,0.2,0.5\n"
        "300,0.3,\n"
        "400,0.4,0.7\n"
    )
    series = cli.progress_series(progress, (cli.REWARD_COLUMN, cli.VALIDATION_COLUMN, "not/logged"))
    assert series[cli.REWARD_COLUMN] == ([100.0, 200.0, 300.0, 400.0], [0.1, 0.2, 0.3, 0.4])
    assert series[cli.VALIDATION_COLUMN] == ([200.0, 400.0], [0.5, 0.7])
    assert series["not/logged"] == ([], [])
    png = tmp_path / "curve.png"
    assert cli.plot_learning_curve(progress, png, "t") == 4
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    progress.write_text("time/total_timesteps,train/loss\n100,1.0\n")  # nothing to plot: still a PNG
    assert cli.plot_learning_curve(progress, png, "t") == 0 and png.stat().st_size > 0


def test_library_code_never_imports_the_applications() -> None:
    """DESIGN's layering: nothing in agents/ imports commands/ or bench/, and bench/ never imports commands/
    (it takes its arguments from there); only the old entry points' shims reach both."""
    import ast

    root = Path(__file__).resolve().parents[1] / "agents"
    shims = {"cli.py", "demo.py", "benchmark.py", "benchmark_rl.py", "benchmark_algorithms.py"}
    for path in root.rglob("*.py"):
        part = path.relative_to(root).parts
        if part[0] == "commands" or (len(part) == 1 and part[0] in shims):
            continue
        forbidden = ("agents.commands",) if part[0] == "bench" else ("agents.commands", "agents.bench")
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            bad = [n for n in names if n.startswith(forbidden)]
            assert not bad, f"{path.relative_to(root)} imports {bad}"


# ---------------------------------------------------------------------- Hugging Face policies (--policy hf:X)


@pytest.mark.parametrize(
    ("text", "kind", "name"),
    [
        ("transformer", "transformer", None),
        ("TransformerPolicy", "transformer", None),  # the flag's value before hf: existed
        ("hf:gpt2", "hf", "gpt2"),
        ("hf:runs/x/policy", "hf", "runs/x/policy"),
        ("hf:C:/models/gpt2", "hf", "C:/models/gpt2"),  # only the first colon separates
    ],
)
def test_policy_flag_values(text: str, kind: str, name: str | None) -> None:
    args = cli.build_parser().parse_args(["train", "--out", "x", "--policy", text])
    assert (args.policy.kind, args.policy.name) == (kind, name)


@pytest.fixture(scope="module")
def hf_run(hf_gpt2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``train --policy hf:<tiny GPT-2>`` on the small copy task, validation checks every 2 rollouts;
    returns (out folder, stdout)."""
    pytest.importorskip("transformers")
    import contextlib
    import io

    out = tmp_path_factory.mktemp("hf_run")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = cli.main(
            ["train", "--env", "TextGen-Copy-v0", "--task-kwargs", TASK_KWARGS,
             "--policy", f"hf:{hf_gpt2_dir}", "--timesteps", "300", "--n-envs", "16", "--eval-examples", "10",
             "--eval-freq", "2", "--seed", "0", "--no-progress-bar", "--device", "cpu", "--out", str(out)]
        )  # fmt: skip
    assert code == 0
    return out, printed.getvalue()


def table_row(printed: str, metric: str) -> list[str]:
    """The cells of one metric's row in the last evaluation table printed."""
    return re.findall(rf"^\| {metric} \| (.*) \|$", printed, flags=re.M)[-1].split(" | ")


def test_train_with_an_hf_policy_writes_a_policy_folder(hf_run: tuple[Path, str], hf_gpt2_dir: Path) -> None:
    """The env speaks the model's tokenizer with one action per model output (no --tokenizer given), and the
    policy and the best policy are written as folders that load back."""
    from agents.policies import HFPolicy
    from lmrl_gym.hf_tokenizer import HFTokenizer

    out, printed = hf_run
    for name in ("model.zip", "progress.csv", "learning_curve.png"):
        assert (out / name).is_file(), name
    for name in ("policy", "best_policy"):
        assert (out / name / "lmrl_gym_policy.json").is_file(), name
    assert "wrote model.zip, policy, best_policy, progress.csv" in printed
    assert len(table_row(printed, "mean_reward")) == 3  # before RL, after RL (final), best on validation
    policy = HFPolicy.load(out / "policy", device="cpu")
    assert policy.tokenizer == HFTokenizer.from_pretrained(hf_gpt2_dir)
    assert saved_arguments(out / "model.zip")["kl_coef"] == 0.0


def test_eval_reads_the_hf_policy_folder(
    hf_run: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """eval on the folder, with the env arguments of training and the folder's own tokenizer, gives the same
    greedy scores on the same test examples as train's final evaluation."""
    out, printed = hf_run
    code = cli.main(
        ["eval", "--checkpoint", str(out / "policy"), "--env", "TextGen-Copy-v0",
         "--task-kwargs", TASK_KWARGS, "--max-examples", "10", "--device", "cpu"]
    )  # fmt: skip
    assert code == 0
    evaluated = capsys.readouterr().out
    assert "| count | 10 |" in evaluated
    for metric in ("mean_reward", "bleu", "mean_length"):
        assert table_row(evaluated, metric)[0] == table_row(printed, metric)[1], metric  # after RL (final)


def test_hf_policy_usage_errors_exit_2(
    hf_run: tuple[Path, str],
    hf_gpt2_dir: Path,
    hf_classifier_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out, _ = hf_run
    cases = [
        # Not a model folder.
        (["train", "--policy", f"hf:{tmp_path}", "--out", str(tmp_path / "x")],
         f"argument --policy: cannot load '{tmp_path}' as a transformers language model"),
        # Our transformer's size flags mean nothing to a pretrained model.
        (["train", "--policy", f"hf:{hf_gpt2_dir}", "--n-layer", "3", "--out", str(tmp_path / "x")],
         f"argument --n-layer: sizes our transformer (--policy transformer); --policy hf:{hf_gpt2_dir} brings"),
        # Another tokenizer than the model's.
        (["train", "--policy", f"hf:{hf_gpt2_dir}", "--tokenizer", str(hf_classifier_dir), "--out", str(tmp_path / "x")],
         "argument --policy: the env's tokenizer"),
        # A folder that is not a policy checkpoint.
        (["eval", "--checkpoint", str(tmp_path)], f"argument --checkpoint: {tmp_path} is not an HFPolicy checkpoint"),
        # The policy's env arguments not given: other prompt widths.
        (["eval", "--checkpoint", str(out / "policy"), "--env", "TextGen-Copy-v0"],
         "argument --checkpoint: the policy was built for max_prompt_tokens="),
    ]  # fmt: skip
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 2, argv
        err = capsys.readouterr().err
        assert message in err, (argv, err)
        assert err.strip().splitlines()[-1].startswith("lmrl-gym"), (
            "the last line is argparse's one-line error"
        )
