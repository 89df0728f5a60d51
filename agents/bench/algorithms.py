"""REINFORCE vs A2C vs PPO on the same tasks, from the same pretrained start, over several seeds.

    lmrl-gym bench algorithms [--tasks TextGen-Copy-v0 ...] [--algos ppo a2c] [--seeds 0 1 2]
        [--timesteps N] [--pretrain-epochs N] [--max-examples 200] [--out runs/bench_algorithms]

For each task one policy is built with a fixed seed and MLE-pretrained briefly (by default a few epochs
per task, :data:`START_PRETRAIN_EPOCHS`: enough to be clearly better than chance, short enough that RL has
room to improve); every (algorithm, seed) run fine-tunes a deep copy of it for ``--timesteps`` env steps
(tokens) with the fine-tuning settings of :data:`FINETUNE_SETTINGS`, so the algorithms differ only in how
they learn. ``--pretrain-epochs 0`` runs the from-scratch comparison instead (untrained start, the
from-scratch settings of :data:`SCRATCH_SETTINGS`, longer runs). Each run is then decoded greedily on the
first ``--max-examples`` test examples. Written into ``--out``:

* ``results.md``: one markdown table per task: the start policy (the MLE start), then one row per
  algorithm with the test mean reward, corpus BLEU, mean sentence BLEU, chrF and exact match as mean ± std
  over seeds and the training wall time per run (the table is printed too);
* ``results.json``: the settings, the start policy's scores and every run's numbers and learning curve;
* ``learning_curves.png``: one panel per task, mean episode reward (last 100 training episodes) against env
  steps, averaged over seeds, per algorithm.

The command line (its flags) is :mod:`agents.commands.bench`; this module runs, writes and formats.
"""

from __future__ import annotations

import copy
import json
import statistics
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback

import lmrl_gym  # noqa: F401  (registers the TextGen ids that --tasks offers)
from agents.algorithms import ALGORITHMS
from agents.bench.machine import describe_machine
from agents.evaluation import evaluate
from agents.policies.transformer import TransformerPolicy
from agents.pretrain import pretrain

# Small instances that the three algorithms can make progress on within the default budget on a CPU.
DEFAULT_TASKS: dict[str, dict[str, Any]] = {
    "TextGen-Copy-v0": {"num_symbols": 6, "min_length": 3, "max_length": 3},
    "TextGen-Reverse-v0": {"num_symbols": 6, "min_length": 2, "max_length": 4},
}
# Pretraining epochs of the start policy per task (any other task: DEFAULT_PRETRAIN_EPOCHS). Measured
# greedy test mean reward of the start: copy 0.51 (exact match 0.10), reverse 0.48 (0.16); two more epochs
# would nearly solve either task (copy 20 epochs: 0.98; reverse 5 epochs: 0.89), leaving RL nothing to do.
START_PRETRAIN_EPOCHS: dict[str, int] = {"TextGen-Copy-v0": 10, "TextGen-Reverse-v0": 3}
DEFAULT_PRETRAIN_EPOCHS = 1
# Fine-tuning a pretrained start: a smaller step than from scratch (a big one first undoes the MLE
# start) and a small KL leash to it. A one-seed sweep of 40k steps on reverse (start 0.48, greedy test
# mean reward): PPO lr 1e-5 / 3e-5 / 1e-4 -> 0.51 / 0.60 / 0.86, A2C 1e-4 / 3e-4 -> 0.57 / 0.67,
# REINFORCE 1e-4 / 3e-4 -> 0.57 / 0.88; on copy every setting but PPO 1e-5 (0.63) reached 1.0. (The
# 2 x 128 model on TextGen-v0 wants PPO lr 1e-5 instead: examples/finetune_from_mle.py.)
FINETUNE_SETTINGS: dict[str, dict[str, Any]] = {
    "ppo": {"learning_rate": 1e-4, "n_envs": 64, "kl_coef": 0.01},
    "a2c": {"learning_rate": 3e-4, "n_envs": 16, "kl_coef": 0.01},
    "reinforce": {"learning_rate": 3e-4, "n_envs": 16, "kl_coef": 0.01},
}
# From scratch, settings known to solve the small copy task (tests/test_algorithms.py): PPO reuses each
# rollout for several epochs, so it wants a smaller step and a bigger batch than the one-update methods.
SCRATCH_SETTINGS: dict[str, dict[str, Any]] = {
    "ppo": {"learning_rate": 1e-4, "n_envs": 64},
    "a2c": {"learning_rate": 1e-3, "n_envs": 16},
    "reinforce": {"learning_rate": 1e-3, "n_envs": 16},
}
POLICY_SIZE: dict[str, int] = {"n_layer": 2, "n_embd": 64}
START_SEED = 0  # the initial weights (and pretraining shuffle) are the same for every run of a task
FINETUNE_TIMESTEPS = 40_000  # from a pretrained start
SCRATCH_TIMESTEPS = 80_000  # from scratch (--pretrain-epochs 0)
CURVE_POINTS = 50


class RewardCurve(BaseCallback):
    """Records ``(num_timesteps, mean episode reward)`` after every rollout.

    The algorithms call ``on_step`` once per rollout, after ``ep_info_buffer`` (the returns of the last 100
    training episodes) has been updated, so every call adds one point.
    """

    def __init__(self) -> None:
        super().__init__()
        self.points: list[tuple[int, float]] = []

    def _on_step(self) -> bool:
        if self.model.ep_info_buffer:
            self.points.append((int(self.model.num_timesteps), float(np.mean(self.model.ep_info_buffer))))
        return True


def make_env(env_id: str) -> gym.Env:
    """The task's env, with the small default instance where :data:`DEFAULT_TASKS` has one."""
    task_kwargs = DEFAULT_TASKS.get(env_id)
    return gym.make(env_id, **({"task_kwargs": task_kwargs} if task_kwargs else {}))


SCORES = ("mean_reward", "bleu", "mean_sentence_bleu", "chrf", "exact_match")


def score_on_test(policy: TransformerPolicy, env: gym.Env, max_examples: int) -> dict[str, float]:
    """Greedy decoding on the test split: the :data:`SCORES` of :func:`agents.evaluation.evaluate`."""
    result = evaluate(policy, env, split="test", method="greedy", max_examples=max_examples)
    return {key: float(result[key]) for key in SCORES}


def start_epochs(env_id: str, pretrain_epochs: int | None) -> int:
    """MLE epochs of the task's start: ``pretrain_epochs`` when given, else the task's short default."""
    if pretrain_epochs is not None:
        return pretrain_epochs
    return START_PRETRAIN_EPOCHS.get(env_id, DEFAULT_PRETRAIN_EPOCHS)


def algo_settings(algo: str, pretrained: bool) -> dict[str, Any]:
    """The constructor arguments of ``algo``: fine-tuning settings from a pretrained start, else scratch."""
    return dict((FINETUNE_SETTINGS if pretrained else SCRATCH_SETTINGS).get(algo, {}))


def build_start(env: gym.Env, pretrain_epochs: int) -> tuple[TransformerPolicy, float]:
    """The policy every run of this task starts from, and the seconds its pretraining took."""
    torch.manual_seed(START_SEED)
    policy = TransformerPolicy.for_env(env, device="cpu", **POLICY_SIZE)
    started = time.perf_counter()
    if pretrain_epochs > 0:
        pretrain(policy, env, epochs=pretrain_epochs, seed=START_SEED)
    return policy, time.perf_counter() - started


def run_one(
    start: TransformerPolicy,
    env: gym.Env,
    algo: str,
    seed: int,
    timesteps: int,
    max_examples: int,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train a copy of ``start`` with ``algo`` and score it; returns the run's record for ``results.json``."""
    # Weights are copied, so this seed only reaches whatever torch's global generator still drives.
    torch.manual_seed(seed)
    policy = copy.deepcopy(start)
    # The KL leash (kl_coef) pulls towards ``start``: the reference is a frozen copy made when learn begins.
    model = ALGORITHMS[algo](policy, env, seed=seed, device="cpu", **(settings or {}))
    curve = RewardCurve()
    started = time.perf_counter()
    model.learn(timesteps, callback=curve)
    seconds = time.perf_counter() - started
    return {
        "algo": algo,
        "seed": seed,
        "timesteps": int(model.num_timesteps),
        "seconds": seconds,
        **{f"test_{key}": value for key, value in score_on_test(model.policy, env, max_examples).items()},
        "curve": [list(point) for point in curve.points],
    }


# ---------------------------------------------------------------------- reporting


def mean_std(values: list[float], digits: int) -> str:
    """``"mean ± std"`` (sample std; 0 for a single value)."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {std:.{digits}f}"


def format_tables(results: dict[str, Any]) -> str:
    """The markdown of ``results.md``: one table per task."""
    seeds = results["config"]["seeds"]
    settings = "; ".join(
        f"{algo} " + ", ".join(f"{k} {v}" for k, v in results["config"]["algo_settings"][algo].items())
        for algo in results["config"]["algos"]
    )
    lines = [
        f"# REINFORCE vs A2C vs PPO: {results['config']['timesteps']} env steps per run, seeds "
        f"{', '.join(map(str, seeds))}, greedy on {results['config']['max_examples']} test examples",
        "",
        f"Settings: {settings}; policy {json.dumps(results['config']['policy'])}. Every run of a task starts "
        "from the same start policy (its row); the wall time of that row is the pretraining's.",
    ]
    for task in results["config"]["tasks"]:
        start = results["start"][task]
        epochs = start["pretrain_epochs"]
        start_name = (
            f"MLE start ({epochs} epoch{'s' if epochs != 1 else ''})" if epochs else "untrained start"
        )
        lines += [
            "",
            f"## {task} `{json.dumps(start['task_kwargs'])}`",
            "",
            # Corpus BLEU-4 is 0 when no output has 4 tokens (every small-copy answer), so the table also
            # gives the mean sentence BLEU (effective order), chrF (characters) and exact match.
            "| policy | test mean reward | test corpus BLEU | test sentence BLEU | test chrF "
            "| test exact match | wall time per run (s) |",
            "|---|---:|---:|---:|---:|---:|---:|",
            # The start is one deterministic policy, so it has a single score rather than a spread.
            f"| {start_name} | {start['test_mean_reward']:.3f} | {start['test_bleu']:.1f} | "
            f"{start['test_mean_sentence_bleu']:.1f} | {start['test_chrf']:.1f} | "
            f"{start['test_exact_match']:.3f} | "
            f"{start['pretrain_seconds']:.1f} |",
        ]
        for algo in results["config"]["algos"]:
            runs = [r for r in results["runs"] if r["task"] == task and r["algo"] == algo]
            lines.append(
                f"| {algo} | {mean_std([r['test_mean_reward'] for r in runs], 3)} | "
                f"{mean_std([r['test_bleu'] for r in runs], 1)} | "
                f"{mean_std([r['test_mean_sentence_bleu'] for r in runs], 1)} | "
                f"{mean_std([r['test_chrf'] for r in runs], 1)} | "
                f"{mean_std([r['test_exact_match'] for r in runs], 3)} | "
                f"{mean_std([r['seconds'] for r in runs], 1)} |"
            )
    return "\n".join(lines) + "\n"


def mean_curve(curves: list[list[list[float]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Average curves whose points fall at different steps (rollouts vary in tokens) on a common grid.

    :return: steps, mean and std over the curves; empty arrays when any curve is empty.
    """
    if not curves or not all(curves):
        return np.array([]), np.array([]), np.array([])
    arrays = [np.asarray(c, dtype=float) for c in curves]
    # Only the range every curve covers: interpolation must not extrapolate a seed's curve.
    low, high = max(a[0, 0] for a in arrays), min(a[-1, 0] for a in arrays)
    steps = np.linspace(low, high, CURVE_POINTS) if high > low else np.array([low])
    values = np.stack([np.interp(steps, a[:, 0], a[:, 1]) for a in arrays])
    return steps, values.mean(axis=0), values.std(axis=0)


def plot_curves(results: dict[str, Any], png_path: Path, dpi: int = 100) -> None:
    """``learning_curves.png``: one panel per task, one line (mean ± std band over seeds) per algorithm."""
    # Agg: no display is needed, and it must be chosen before pyplot is imported.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = results["config"]["tasks"]
    columns = min(len(tasks), 4)  # wrapped into rows of four panels
    rows = -(-len(tasks) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 4 * rows), squeeze=False)
    for ax in axes.flat[len(tasks) :]:
        ax.set_visible(False)
    for ax, task in zip(axes.flat, tasks, strict=False):
        for algo in results["config"]["algos"]:
            curves = [r["curve"] for r in results["runs"] if r["task"] == task and r["algo"] == algo]
            steps, mean, std = mean_curve(curves)
            if steps.size:
                (line,) = ax.plot(steps, mean, label=algo)
                ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        ax.set_title(task)
        ax.set_xlabel("env steps (generated tokens)")
        ax.set_ylabel("mean episode reward (last 100 episodes)")
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=dpi)
    plt.close(fig)


def run_benchmark(
    tasks: list[str],
    algos: list[str],
    seeds: list[int],
    timesteps: int | None = None,
    pretrain_epochs: int | None = None,
    max_examples: int = 200,
    out: str | Path = "runs/bench_algorithms",
) -> dict[str, Any]:
    """Run every (task, algorithm, seed), write ``results.md``, ``results.json`` and ``learning_curves.png``
    into ``out`` and print the table; returns the results (what ``results.json`` holds).

    :param timesteps: env steps per run (default: :data:`FINETUNE_TIMESTEPS` from a pretrained start,
        :data:`SCRATCH_TIMESTEPS` from scratch).
    :param pretrain_epochs: MLE epochs of every task's start (default: :data:`START_PRETRAIN_EPOCHS`);
        0 runs the from-scratch comparison.
    """
    # Tiny models, many small ops: on a small shared CPU a second thread slows torch down several times.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(tasks, algos, seeds, timesteps, pretrain_epochs, max_examples, Path(out))
    finally:
        torch.set_num_threads(threads)


def _run(tasks, algos, seeds, timesteps, pretrain_epochs, max_examples, out: Path) -> dict[str, Any]:
    # Repeated values would only repeat runs and skew the mean ± std.
    tasks, algos, seeds = (list(dict.fromkeys(v)) for v in (tasks, algos, seeds))
    out.mkdir(parents=True, exist_ok=True)
    # Fine-tuning settings as soon as one start is pretrained; 0 epochs everywhere is the scratch mode.
    pretrained = any(start_epochs(task, pretrain_epochs) > 0 for task in tasks)
    timesteps = timesteps or (FINETUNE_TIMESTEPS if pretrained else SCRATCH_TIMESTEPS)
    settings = {algo: algo_settings(algo, pretrained) for algo in algos}
    results: dict[str, Any] = {
        "config": {
            "tasks": tasks,
            "algos": algos,
            "seeds": seeds,
            "timesteps": timesteps,
            "pretrain_epochs": {task: start_epochs(task, pretrain_epochs) for task in tasks},
            "max_examples": max_examples,
            "policy": POLICY_SIZE,
            "algo_settings": settings,
        },
        "start": {},
        "runs": [],
    }
    started = time.perf_counter()
    for task in tasks:
        env = make_env(task)
        epochs = start_epochs(task, pretrain_epochs)
        start, pretrain_seconds = build_start(env, epochs)
        results["start"][task] = {
            "task_kwargs": DEFAULT_TASKS.get(task, {}),
            "pretrain_epochs": epochs,
            "pretrain_seconds": pretrain_seconds,
            **{f"test_{k}": v for k, v in score_on_test(start, env, max_examples).items()},
        }
        for algo in algos:
            for seed in seeds:
                run = run_one(start, env, algo, seed, timesteps, max_examples, settings[algo])
                record = {"task": task, **run}
                results["runs"].append(record)
                print(
                    f"{task} {algo} seed {seed}: test mean reward {record['test_mean_reward']:.3f}, "
                    f"BLEU {record['test_bleu']:.1f}, chrF {record['test_chrf']:.1f} ({record['seconds']:.1f}s)",
                    flush=True,
                )
    results["total_seconds"] = time.perf_counter() - started

    table = format_tables(results)
    (out / "results.md").write_text(table)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    plot_curves(results, out / "learning_curves.png")
    print("\n" + table)
    print(describe_machine("cpu"))
    print(
        f"total {results['total_seconds']:.0f}s; wrote results.md, results.json and learning_curves.png to {out}"
    )
    return results
