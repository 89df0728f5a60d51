"""Every example script runs as is (with a tiny budget), so none of them rots."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPTS = {
    "quickstart.py": [],
    "custom_reward.py": [],
    "own_data.py": [],
    "sb3_ppo.py": ["--timesteps", "1024"],
    "pretrain_evaluate.py": ["--epochs", "1", "--max-examples", "20"],
    "finetune_from_mle.py": ["--timesteps", "64", "--seeds", "0", "--max-examples", "10"],
    "irl_oracle.py": ["--irl-timesteps", "300", "--ppo-timesteps", "200", "--samples", "20", "--out", "RUNS"],
    "benchmark_env.py": ["--num-envs", "8", "--steps", "5", "--repeats", "1", "--episodes", "16", "32"],
    # Tiny GPT-2, classifier and data set built offline; one rollout of 8 episodes of at most 16 tokens.
    "hf_sentiment.py": ["--tiny", "--timesteps", "100", "--n-envs", "8", "--max-new-tokens", "16",
                        "--eval-prompts", "8"],
}  # fmt: skip
# Scripts that need an extra: skipped (not failed) where it is not installed.
NEEDS = {"hf_sentiment.py": ("transformers", "datasets")}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_example_runs(script, tmp_path):
    for module in NEEDS.get(script, ()):
        pytest.importorskip(module)
    args = [str(tmp_path) if arg == "RUNS" else arg for arg in SCRIPTS[script]]  # outputs go to a tmp dir
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_every_example_is_listed():
    assert {p.name for p in (ROOT / "examples").glob("*.py")} == set(SCRIPTS)


def test_demo_prints_a_table_where_retrieval_beats_random():
    result = subprocess.run(
        [sys.executable, "-m", "lmrl_gym.demo", "--episodes", "4"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert "| policy" in result.stdout
    means = dict(part.split() for part in result.stdout.split("mean reward:")[1].strip().split(", "))
    assert float(means["retrieval"]) > float(means["random"])
