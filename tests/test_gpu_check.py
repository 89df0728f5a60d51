"""The GPU check (``scripts/gpu_check.sh``) and the figures it reports: the dry run's plan, the FLOP count
and device peaks behind ``lmrl-gym bench decoding``'s TFLOP/s and MFU, and (on CUDA only) bf16 autocast."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import lmrl_gym  # noqa: F401  (registers the ids)
from agents import TransformerConfig, TransformerLM, TransformerPolicy
from agents.bench import decoding
from agents.commands.bench import run_benchmark_command

ROOT = Path(__file__).resolve().parents[1]
needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="the scripts are bash")


def run_script(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHON": sys.executable, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@needs_bash
def test_the_dry_run_prints_the_machine_and_the_plan_and_runs_nothing(tmp_path):
    out = tmp_path / "out"
    done = run_script("scripts/gpu_check.sh", "--dry-run", OUT=str(out))
    assert done.returncode == 0, done.stderr
    assert f"torch: {torch.__version__}" in done.stdout
    assert "pytest -m cuda" in done.stdout and "tests/test_gpu_check.py" in done.stdout
    assert "lmrl-gym bench decoding --device" in done.stdout
    if torch.cuda.is_available():
        assert "--batch 1024 --dtype bf16" in done.stdout and "bench vs-trl --quick" in done.stdout
    else:
        assert "CUDA: not available" in done.stdout and "bench-vs-trl    skipped: no CUDA" in done.stdout
    assert not out.exists()  # nothing written


@needs_bash
def test_the_scripts_refuse_unknown_arguments_and_print_their_help():
    for script in ("scripts/gpu_check.sh", "scripts/build_wheelhouse.sh"):
        assert run_script(script, "--no-such-flag").returncode == 2
        helped = run_script(script, "--help")
        assert helped.returncode == 0 and "wheelhouse" in helped.stdout


@pytest.mark.parametrize("arch", ["causal", "seq2seq"])
def test_decoding_flops_equal_torchs_flop_counter(arch):
    """Each way of decoding, as bench decoding runs it, counted by torch's FlopCounterMode (attention in
    its math kernel, whose matmuls the counter sees), on ragged prompts and a deeper encoder."""
    p, t, b = 5, 3, 3
    config = TransformerConfig(
        vocab_size=50,
        arch=arch,
        n_layer=2,
        n_head=2,
        n_embd=16,
        max_positions=p + 1 + t,
        n_encoder_layer=3 if arch == "seq2seq" else None,
    )
    model = TransformerLM(config).eval()
    gen = torch.Generator().manual_seed(0)
    prompts = torch.randint(4, 50, (b, p), generator=gen)
    lengths = torch.tensor([p, 3, 1])
    prompts = prompts.masked_fill(torch.arange(p)[None, :] >= lengths[:, None], 0)
    targets = torch.randint(4, 50, (b, t), generator=gen)

    def counted(fn) -> int:
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            fn()
        return counter.get_total_flops()

    def cached():
        _, _, cache = model.start(prompts, lengths, t)
        for i in range(t):
            model.step(cache, targets[:, i])

    def recompute():
        for i in range(t):
            model(prompts, lengths, targets[:, :i])

    expected = decoding.decoding_flops(config, p, t)
    assert counted(cached) == b * expected["cached"]
    assert counted(recompute) == b * expected["recompute"]
    assert counted(lambda: model(prompts, lengths, targets)) == b * expected["teacher_forced"]


@pytest.mark.parametrize(
    ("name", "dtype", "tf32", "peak"),
    [
        ("NVIDIA H200", "bf16", False, 989.5),
        ("NVIDIA H100 80GB HBM3", "bf16", False, 989.5),
        ("NVIDIA H100 PCIe", "fp32", True, 378.0),
        ("NVIDIA H100 NVL", "fp32", False, 60.0),
        ("NVIDIA A100-SXM4-80GB", "bf16", False, 312.0),
        ("NVIDIA L40S", "bf16", False, 362.05),
        ("NVIDIA L4", "fp32", True, 60.0),
        ("NVIDIA A10", "bf16", False, 125.0),
        ("NVIDIA A10G", "bf16", False, None),  # a cloud variant with its own clocks: not guessed
        ("Tesla T4", "fp32", False, None),
    ],
)
def test_peaks_are_found_by_gpu_name_dtype_and_tf32(monkeypatch, name, dtype, tf32, peak):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    try:
        found, source = decoding.device_peak_tflops(torch.device("cuda"), dtype)
    finally:
        torch.set_float32_matmul_precision(precision)
    assert found == peak
    assert (name in source) if peak is None else ("dense" in source or "TF32 off" in source)


def test_bench_decoding_prints_tflops_and_mfu_against_the_given_peak(capsys):
    assert decoding.device_peak_tflops(torch.device("cpu"), "bf16")[0] is None
    argv = ["--batch", "2", "--new-tokens", "2", "--prompt-tokens", "4", "--repeats", "1", "--device", "cpu"]
    argv += ["--n-layer", "1", "--n-embd", "32", "--vocab", "50"]
    assert run_benchmark_command("decoding", [*argv, "--dtype", "bf16", "--peak-tflops", "2.5"]) == 0
    out = capsys.readouterr().out
    assert "| decoding | tokens/s | KV-cached is | TFLOP/s | MFU |" in out
    assert ", bf16, medians of 1" in out and "MFU peak: 2.5 TFLOP/s (--peak-tflops)" in out
    rows = [line for line in out.splitlines() if line.startswith(("| KV-cached", "| one teacher"))]
    assert len(rows) == 2 and all(row.rstrip(" |").endswith("%") for row in rows)
    assert run_benchmark_command("decoding", argv) == 0
    assert "| n/a |" in capsys.readouterr().out  # no peak for a CPU
    with pytest.raises(SystemExit) as exit_info:  # HF decoding has no dtype flag of its own
        run_benchmark_command("decoding", ["--hf-size", "tiny", "--dtype", "bf16"])
    assert exit_info.value.code == 2
    assert "--dtype, --peak-tflops and --compile apply to our TransformerLM" in capsys.readouterr().err


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_bf16_autocast_scores_close_to_fp32():
    torch.manual_seed(0)
    policy = TransformerPolicy.for_env(
        "TextGen-Copy-v0", n_layer=2, n_embd=64, device="cuda", bf16_autocast=True
    ).eval()
    prompts = torch.tensor([[4, 5, 6, 7, 0, 0, 0, 0], [5, 6, 0, 0, 0, 0, 0, 0]])
    tokens = []
    with torch.no_grad():
        logits, state = policy.start(prompts)
        assert logits.dtype == torch.float32 and logits.device.type == "cuda"
        for _ in range(4):  # greedy: valid ids by construction
            tokens.append(logits.argmax(-1))
            logits, state = policy.step(state, tokens[-1])
        tokens = torch.stack(tokens, 1)
        lengths = torch.full((2,), 4)
        bf16 = policy.evaluate_sequences(prompts, tokens, lengths)
        policy.bf16_autocast = False
        fp32 = policy.evaluate_sequences(prompts, tokens, lengths)
    assert bf16.log_probs.dtype == torch.float32 and bf16.log_probs.device.type == "cuda"
    torch.testing.assert_close(bf16.log_probs, fp32.log_probs, atol=0.05, rtol=0)
    assert not torch.equal(bf16.log_probs, fp32.log_probs)  # the bf16 pass really ran in bf16


def test_interleaved_medians_take_turns_after_a_warm_up_round_and_run_before_each_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The benchmarks' shared timer: one untimed round, then ``repeats`` rounds calling each function once
    in turn, ``before`` ahead of every call (not timed); the medians are of the timed rounds only. A fake
    clock that each call advances by its own duration, so nothing here depends on the machine's speed."""
    from agents.bench import decoding

    now = [0.0]
    monkeypatch.setattr(decoding.time, "perf_counter", lambda: now[0])
    calls: list[str] = []
    durations = {"a": iter([50.0, 1.0, 2.0, 9.0]), "b": iter([0.0, 4.0, 5.0, 6.0])}

    def timed(name: str):
        def fn() -> None:
            calls.append(name)
            now[0] += next(durations[name])

        return fn

    def before() -> None:
        calls.append("before")
        now[0] += 100.0  # untimed: it runs before the clock starts

    medians = decoding.interleaved_medians(
        {"a": timed("a"), "b": timed("b")}, 3, torch.device("cpu"), before=before
    )
    assert calls == ["before", "a", "before", "b"] * 4
    assert medians == {"a": 2.0, "b": 5.0}  # the 50 s warm-up call and every `before` are left out
