"""``lmrl-gym bench vs-trl``: our GRPO against TRL's GRPOTrainer. The smoke run goes end to end through the
command line (TRL is in the ``bench`` extra, which CI installs); bad input exits 2, a missing TRL says what
to install."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from agents.bench import vs_trl
from agents.commands import cli


def test_copy_score_pays_partial_credit_per_position() -> None:
    assert vs_trl.copy_score("c a d", "c a d") == 1.0
    assert vs_trl.copy_score(" c x d", "c a d") == pytest.approx(2 / 3)  # a leading space is no word
    assert vs_trl.copy_score("c a d e", "c a d") == pytest.approx(3 / 4)  # an extra word costs
    assert vs_trl.copy_score("c a", "c a d") == pytest.approx(2 / 3)
    assert vs_trl.copy_score("", "c a d") == 0.0
    assert vs_trl.copy_score("", "") == 0.0


def test_smoke_run_prints_every_row_with_positive_speeds(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "vs_trl.json"
    argv = ["bench", "vs-trl", "--smoke", "--threads", "2", "--device", "cpu", "--json", str(out)]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[1].startswith("CPU: "), "the machine line is under the settings line"
    for row in vs_trl.ROWS:
        assert f"| {row} |" in printed
    assert "Where the time goes:" in printed
    (result,) = json.loads(out.read_text())
    assert result["settings"]["precision"] == "fp32"
    assert result["settings"]["updates"] == vs_trl.MODES["smoke"]["updates"]
    for row in vs_trl.ROWS:
        (seed,) = result["rows"][row]["seeds"]
        assert seed["updates"] == vs_trl.MODES["smoke"]["updates"]
        for figure in ("tokens_per_s", "generation_tokens_per_s", "update_tokens_per_s"):
            assert seed[figure] > 0, (row, figure)
        # 64 completions of 1 to 16 tokens per update (eos included once sampled)
        assert 1 <= seed["completion_length"] <= 16
        assert 0.0 <= seed["reward"] <= 1.0
    assert result["rows"][vs_trl.TRL_ROW]["speed_ratio"] == 1.0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--precision", "fp16"], "argument --precision: invalid choice: 'fp16' (choose from 'fp32', 'bf16')"),
        (["--updates", "0"], "argument --updates: must be a positive integer, got 0"),
        (["--seeds", "two"], "argument --seeds: must be a positive integer, got 'two'"),
        (["--threads", "-1"], "argument --threads: must be a positive integer, got -1"),
        (["--quick", "--smoke"], "argument --smoke: not allowed with argument --quick"),
        (["--device", "tpu9"], "argument --device: unknown device 'tpu9'"),
    ],
)  # fmt: skip
def test_bad_input_exits_2_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "vs-trl", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.strip().splitlines()[-1].startswith("lmrl-gym bench vs-trl: error:")


def test_without_trl_it_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(
        sys.modules, "trl", None
    )  # `import trl` now raises ImportError, as when not installed
    assert cli.main(["bench", "vs-trl", "--smoke", "--device", "cpu"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "", "nothing measured or printed before the check"
    assert "needs TRL, which is not installed" in captured.err
    assert 'pip install "lmrl-gym[bench]"' in captured.err
    with pytest.raises(vs_trl.MissingTRLError, match=r"lmrl-gym\[bench\]"):
        vs_trl.run(updates=1, seeds=1, warmup=1, threads=1, precision="fp32", device="cpu")


def test_help_is_the_module_docstring(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "vs-trl", "--help"])
    assert exit_info.value.code == 0
    assert "TRL's ``GRPOTrainer``" in capsys.readouterr().out
