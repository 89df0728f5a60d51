"""``lmrl-gym bench decoding --policy hf:PATH``: our rollout's decoding over HFPolicy against ``model.generate``
runs on the tests' tiny GPT-2 and prints its table. Speed itself is the benchmark's business, not a test's:
nothing here asserts a ratio."""

import pytest
import torch

pytest.importorskip("transformers")

from agents.bench import hf_decoding  # noqa: E402
from agents.commands.bench import run_benchmark_command  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def policy(hf_gpt2_dir):
    from agents.policies.hf import HFPolicy

    return HFPolicy.from_pretrained(hf_gpt2_dir, device="cpu").eval()


def test_bench_decoding_hf_prints_the_table(hf_gpt2_dir, capsys):
    argv = ["--policy", f"hf:{hf_gpt2_dir}", "--batch", "4", "--prompt-tokens", "6", "--new-tokens", "5"]
    assert run_benchmark_command("decoding", [*argv, "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "GPT2LMHeadModel" in out and "batch 4, prompts of 3-6 tokens, exactly 5 new tokens" in out
    assert "CPU: " in out and "transformers " in out
    assert "greedy decoding through both gives the same tokens: 100%" in out
    assert (
        "| ours: HFPolicy start/step + inverse-CDF sampling" in out
        and "model.generate(do_sample=True)" in out
    )


def test_both_sides_sample_exactly_n_tokens_without_eos(policy):
    prompts, lengths = hf_decoding.make_prompts(policy, batch=6, prompt_tokens=5)
    assert lengths.min() >= 2 and lengths.max() <= 5
    eos = policy.tokenizer.eos_id
    tokens, log_probs, values = hf_decoding.sample_ours(
        policy, prompts, lengths, 7, torch.Generator().manual_seed(0)
    )
    assert tokens.shape == log_probs.shape == values.shape == (6, 7)
    assert not (tokens == eos).any() and (log_probs < 0).all() and torch.isfinite(values).all()
    ids, mask = hf_decoding.generate_inputs(policy, prompts, lengths)
    assert (mask.sum(1) == lengths).all() and (mask[:, -1] == 1).all()  # left-padded
    theirs = hf_decoding.sample_generate(policy, ids, mask, 7)
    assert theirs.shape == (6, 7) and not (theirs == eos).any()


def test_greedy_decoding_agrees_so_both_sides_compute_the_same_model(policy):
    prompts, lengths = hf_decoding.make_prompts(policy, batch=5, prompt_tokens=8, seed=1)
    assert hf_decoding.check_same_model(policy, prompts, lengths, 6) == 1.0


def test_sizes():
    assert hf_decoding.parse_size("tiny") == (2, 64, 2)
    assert hf_decoding.parse_size("6x512") == (6, 512, 8)
    assert hf_decoding.parse_size("4x96x3") == (4, 96, 3)
    for bad in ("6", "6x500x7", "0x64", "big"):
        with pytest.raises(ValueError):
            hf_decoding.parse_size(bad)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--policy", "gpt2"], "hf:PATH_OR_NAME"),
        (["--hf-size", "huge"], "expected 'tiny'"),
        (["--policy", "hf:x", "--hf-size", "tiny"], "not both"),
    ],
)
def test_bad_flags_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_benchmark_command("decoding", argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_too_many_positions_is_a_clear_error(hf_gpt2_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_benchmark_command("decoding", ["--policy", f"hf:{hf_gpt2_dir}", "--new-tokens", "200"])
    assert exit_info.value.code == 2
    assert "need 216 positions; the model has 128" in capsys.readouterr().err


def test_hf_size_builds_a_random_gpt2_locally(capsys):
    argv = [
        "--hf-size",
        "1x32x2",
        "--batch",
        "2",
        "--prompt-tokens",
        "4",
        "--new-tokens",
        "2",
        "--repeats",
        "1",
    ]
    assert run_benchmark_command("decoding", argv) == 0
    assert "random-weight GPT-2 built locally, 1 layer x 32, 2 heads" in capsys.readouterr().out


def test_a_folder_without_a_model_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_benchmark_command("decoding", ["--policy", f"hf:{tmp_path}"])
    assert exit_info.value.code == 2
    assert "config.json" in capsys.readouterr().err
