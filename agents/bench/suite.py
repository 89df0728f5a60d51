"""The benchmark suite: every algorithm on every built-in task, from one MLE start per task, over seeds.

    lmrl-gym bench suite [--quick | --smoke] [--tasks copy reverse ...] [--algos ppo grpo ...]
        [--seeds 0 1 2] [--workers 2] [--out runs/bench_suite]

For each task of :data:`SUITE_TASKS` one policy (2 layers x 64) is built with a fixed seed and trained by
maximum likelihood on a fixed number of reference pairs (:attr:`SuiteTask.start_examples`), chosen so that
the start scores about 0.3-0.7 of the task's best on its metric: room for reinforcement learning to close.
Every (algorithm, seed) run fine-tunes that start with the same token budget (``timesteps``). The offline
algorithms (``filtered_bc``, ``ilql``) see the same amount of experience without acting: the start's own
sampled episodes on the training split, as many as PPO samples in that budget, and learn from them for as
many gradient steps as PPO takes (no references: those would make them more MLE, a different
comparison). Each run is then decoded greedily on the test split.

The metric of a task is its own success measure: exact match for the algorithmic tasks and SCAN, corpus
BLEU / 100 for numbers (English -> French number words). RL trains on the task's reward
(:attr:`SuiteTask.reward`: on the exact-match tasks half BLEU, half exact match, so that partial credit
guides and success pays). **Headroom closed** = ``100 (score - start) / (best - start)`` with best = 1: the
share of what the MLE start left that RL recovered (negative when RL made the metric worse). Its mean per
algorithm over tasks comes with a 95% bootstrap interval over (task, seed) pairs. The oracle task
(``TextGen-Oracle-v0``, the ``lm`` reward: log-likelihood under a hidden n-gram LM) has no fixed best, so
its mean test reward is reported beside the table, not in the headroom mean.

Written into ``--out``: ``results.md`` (the tables), ``results.json`` (settings, starts, every run with its
learning curve) and ``learning_curves.png`` (one panel per task, mean training episode reward against env
steps for the online algorithms).

Modes: the default run (3 seeds, every task and algorithm), ``--quick`` (one seed, a quarter of the budget)
and ``--smoke`` (two short tasks, tiny budgets: what the test suite runs). ``--workers N`` runs N runs at
once in separate processes, one thread each (on a 2-core CPU, 2 workers nearly halve the wall time).
"""

from __future__ import annotations

import inspect
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import lmrl_gym  # noqa: F401  (registers the TextGen ids)
from agents.algorithms import ALGORITHMS, OFFLINE_ALGORITHMS
from agents.bench.algorithms import RewardCurve, mean_std, plot_curves
from agents.bench.machine import describe_machine
from agents.evaluation import evaluate
from agents.policies.transformer import TransformerPolicy
from agents.pretrain import pretrain_subset
from agents.rollout import Trajectories, collect_trajectories
from lmrl_gym.vector_env import TextGenVectorEnv

POLICY_SIZE: dict[str, int] = {"n_layer": 2, "n_embd": 64}
START_SEED = 0
# Half BLEU (partial credit that guides), half exact match (what the metric counts).
BLEU_AND_EXACT_MATCH = {"bleu": 0.5, "exact_match": 0.5}


@dataclass(frozen=True)
class SuiteTask:
    """One task of the suite.

    :param env_id: / :param task_kwargs: the env.
    :param metric: ``"exact_match"`` or ``"bleu"`` (the :func:`agents.evaluation.evaluate` key; BLEU is
        divided by 100), or ``"mean_reward"`` for a task with no fixed best (reported beside the table).
    :param reward: the env's reward during RL.
    :param start_examples: MLE reference pairs of the start (several passes where it exceeds the train
        split).
    :param timesteps: env steps (generated tokens) of every online run.
    """

    env_id: str
    task_kwargs: dict[str, Any] = field(default_factory=dict)
    metric: str = "exact_match"
    reward: Any = field(default_factory=lambda: dict(BLEU_AND_EXACT_MATCH))
    start_examples: int = 4000
    timesteps: int = 30_000

    def make_env(self) -> gym.Env:
        kwargs: dict[str, Any] = {"reward": self.reward}
        if self.task_kwargs:
            kwargs["task_kwargs"] = self.task_kwargs
        return gym.make(self.env_id, **kwargs)

    @property
    def has_best(self) -> bool:
        return self.metric != "mean_reward"


# Pairs of MLE per start, chosen with the suite's own start (2 x 64, START_SEED, one thread; greedy on the
# first 100-200 test examples) to land at about 0.3-0.7 of the best: copy 8,000 pairs -> exact match 0.50,
# reverse 16,000 -> 0.67, sort 4,000 -> 0.34, addition 80,000 -> 0.40, SCAN simple 48,000 -> ~0.3,
# numbers 10,000 -> BLEU ~52. SCAN's length split stays at 0 however long MLE runs (its test commands are
# longer than any it trains on), so its start is chosen for BLEU (~46 at 16,000).
SUITE_TASKS: dict[str, SuiteTask] = {
    "copy": SuiteTask("TextGen-Copy-v0", start_examples=8_000),
    "reverse": SuiteTask("TextGen-Reverse-v0", start_examples=16_000),
    "sort": SuiteTask("TextGen-Sort-v0", start_examples=4_000),
    "addition": SuiteTask("TextGen-Addition-v0", start_examples=80_000),
    "scan-simple": SuiteTask(
        "TextGen-SCAN-v0", {"split_name": "simple"}, start_examples=48_000, timesteps=60_000
    ),
    "scan-length": SuiteTask(
        "TextGen-SCAN-v0", {"split_name": "length"}, start_examples=16_000, timesteps=60_000
    ),
    "numbers": SuiteTask("TextGen-v0", metric="bleu", reward="bleu", start_examples=10_000),
    "oracle": SuiteTask("TextGen-Oracle-v0", metric="mean_reward", reward="lm", start_examples=4_000),
}
# Fine-tuning settings. From these starts the value-based methods (PPO, NLPO, A2C, REINFORCE with its value
# baseline) lose what MLE taught unless the value loss stays out of the shared trunk and the step is small:
# PPO on the numbers start (BLEU 72.5, 30k tokens, seed 0) ends at 41.4 with lr 1e-5 and the shared
# gradient, 72.7 with value_trunk_gradient=False, and 14.9 / 27.6 with lr 3e-5 / 1e-4 even then. GRPO and
# RLOO (no value head) at 3e-5 rose to ~0.77 BLEU / 100 in a one-seed sweep. GRPO uses the 128-episode
# rollouts (16 prompts x 8) its from-scratch test needed and its KL in the loss (beta). The offline methods
# as their slow test (tests/test_offline.py) trained them.
FINETUNE_SETTINGS: dict[str, dict[str, Any]] = {
    "ppo": {"learning_rate": 1e-5, "n_envs": 64, "kl_coef": 0.01, "value_trunk_gradient": False},
    "nlpo": {"learning_rate": 1e-5, "n_envs": 64, "kl_coef": 0.01, "value_trunk_gradient": False},
    "a2c": {"learning_rate": 1e-5, "n_envs": 16, "kl_coef": 0.01, "value_trunk_gradient": False},
    "reinforce": {"learning_rate": 1e-5, "n_envs": 16, "kl_coef": 0.01, "value_trunk_gradient": False},
    "grpo": {"learning_rate": 3e-5, "n_envs": 128, "num_generations": 8, "beta": 0.01},
    "rloo": {"learning_rate": 3e-5, "n_envs": 64, "num_generations": 4, "kl_coef": 0.01},
    "filtered_bc": {"learning_rate": 1e-3, "batch_size": 128, "keep_fraction": 0.3},
    "ilql": {"learning_rate": 1e-3, "batch_size": 128, "q_beta": 16.0, "polyak_alpha": 0.05},
}
MODES: dict[str, dict[str, Any]] = {
    "default": {"seeds": (0, 1, 2), "budget": 1.0, "max_examples": 200, "tasks": tuple(SUITE_TASKS)},
    "quick": {"seeds": (0,), "budget": 0.25, "max_examples": 100, "tasks": tuple(SUITE_TASKS)},
    "smoke": {
        "seeds": (0,),
        "budget": None,
        "max_examples": 16,
        "tasks": ("copy", "sort"),
    },
}
SMOKE_TIMESTEPS = 256
SMOKE_START_EXAMPLES = 256
BOOTSTRAP_RESAMPLES = 2000


# ---------------------------------------------------------------------- one task's start, one run


def build_start(task: SuiteTask, env: gym.Env) -> TransformerPolicy:
    """The policy every run of ``task`` starts from: fixed initial weights, ``start_examples`` MLE pairs."""
    torch.manual_seed(START_SEED)
    policy = TransformerPolicy.for_env(env, device="cpu", **POLICY_SIZE)
    pairs = env.unwrapped.setup.data.prompts.shape[0]  # one pair per training prompt at least
    done = 0
    while done < task.start_examples:  # passes of at most one epoch each, each with its own shuffle
        chunk = min(pairs, task.start_examples - done)
        pretrain_subset(policy, env, chunk, seed=START_SEED + done)
        done += chunk
    return policy.eval()


def metric_of(task: SuiteTask, result: dict[str, Any]) -> float:
    """The task's metric from an :func:`agents.evaluation.evaluate` result, on a 0-1 scale where it has one."""
    value = float(result[task.metric])
    return value / 100.0 if task.metric == "bleu" else value


def score(task: SuiteTask, policy: Any, env: gym.Env, max_examples: int) -> dict[str, float]:
    result = evaluate(policy, env, split="test", method="greedy", max_examples=max_examples)
    return {
        "metric": metric_of(task, result),
        "mean_reward": float(result["mean_reward"]),
        "exact_match": float(result["exact_match"]),
        "bleu": float(result["bleu"]),
    }


def settings_of(algo: str) -> dict[str, Any]:
    return dict(FINETUNE_SETTINGS.get(algo, {}))


def ppo_budget(timesteps: int, mean_length: float) -> tuple[int, int]:
    """``(episodes, optimizer steps)`` of PPO on ``timesteps`` tokens with :data:`FINETUNE_SETTINGS`'
    rollouts and its default epochs and minibatches: the offline algorithms' data and steps on the task.

    :param mean_length: tokens per episode (the start's sampled mean)."""
    defaults = inspect.signature(ALGORITHMS["ppo"].__init__).parameters
    n_envs = FINETUNE_SETTINGS["ppo"]["n_envs"]
    rollouts = math.ceil(timesteps / max(n_envs * mean_length, 1.0))
    steps = rollouts * defaults["n_epochs"].default * math.ceil(n_envs / defaults["batch_size"].default)
    return rollouts * n_envs, steps


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """Train a copy of the task's start with one algorithm and seed, score it; the run's record.

    ``job``: ``task`` (name), ``spec`` (a :class:`SuiteTask` as a dict), ``algo``, ``seed``,
    ``timesteps``, ``max_examples``, ``start_path`` (the saved start policy), ``offline_steps``. A plain
    dict of plain values, so that it crosses to a worker process."""
    torch.set_num_threads(1)  # tiny models, many small ops: more threads per run only contend
    task = SuiteTask(**job["spec"])
    env = task.make_env()
    policy = TransformerPolicy.load(job["start_path"], env=env, device="cpu")
    torch.manual_seed(job["seed"])
    algo, seed = job["algo"], job["seed"]
    started = time.perf_counter()
    curve = RewardCurve()
    if algo in OFFLINE_ALGORITHMS:
        data = start_rollouts(policy, env, seed, job["offline_episodes"])
        model = ALGORITHMS[algo](policy, env, dataset=data, seed=seed, device="cpu", **settings_of(algo))
        model.learn(job["offline_steps"])
    else:
        model = ALGORITHMS[algo](policy, env, seed=seed, device="cpu", **settings_of(algo))
        model.learn(job["timesteps"], callback=curve)
    seconds = time.perf_counter() - started
    return {
        "task": job["task"],
        "algo": algo,
        "seed": seed,
        "timesteps": int(model.num_timesteps),
        "seconds": seconds,
        # model.policy acts as the algorithm does (ILQL's adds q_beta * min Q to the logits).
        **{
            f"test_{key}": value for key, value in score(task, model.policy, env, job["max_examples"]).items()
        },
        "curve": [list(point) for point in curve.points],
    }


def start_rollouts(start: TransformerPolicy, env: gym.Env, seed: int, episodes: int) -> Trajectories:
    """``episodes`` episodes sampled from the start on the training split, rewarded by the env: the offline
    algorithms' data set."""
    venv = TextGenVectorEnv(num_envs=episodes, output="torch", info_text=False, **env.unwrapped.setup.kwargs)
    venv.reset(seed=seed)
    return collect_trajectories(start, venv, torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------- statistics and reporting


def headroom_closed(score_value: float, start: float, best: float = 1.0) -> float:
    """``100 (score - start) / (best - start)``; nan when the start is already at the best."""
    room = best - start
    return float("nan") if room <= 0 else 100.0 * (score_value - start) / room


def bootstrap_interval(
    values: list[float], resamples: int = BOOTSTRAP_RESAMPLES, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (nan-free), with a fixed generator."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = data[rng.integers(data.size, size=(resamples, data.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def add_headroom(results: dict[str, Any]) -> None:
    """Every run on a task with a best gets ``headroom_closed``; ``results["summary"]`` the mean per
    algorithm over tasks with its bootstrap interval over (task, seed) pairs."""
    summary: dict[str, Any] = {}
    for run in results["runs"]:
        spec = results["config"]["task_specs"][run["task"]]
        start = results["start"][run["task"]]["test_metric"]
        run["headroom_closed"] = (
            headroom_closed(run["test_metric"], start) if spec["metric"] != "mean_reward" else None
        )
    for algo in results["config"]["algos"]:
        values = [
            r["headroom_closed"]
            for r in results["runs"]
            if r["algo"] == algo and r["headroom_closed"] is not None and not math.isnan(r["headroom_closed"])
        ]
        low, high = bootstrap_interval(values)
        summary[algo] = {
            "mean": float(np.mean(values)) if values else float("nan"),
            "low": low,
            "high": high,
            "pairs": len(values),
        }
    results["summary"] = summary


def format_results(results: dict[str, Any]) -> str:
    """The markdown of ``results.md``: the headroom summary, then one table per task."""
    config = results["config"]
    algos = config["algos"]
    lines = [
        f"# Benchmark suite ({config['mode']}): {len(config['tasks'])} tasks, seeds "
        f"{', '.join(map(str, config['seeds']))}, greedy on the first {config['max_examples']} test examples",
        "",
        "Headroom closed = 100 (score - start) / (1 - start) on each task's metric, mean over tasks with a "
        f"95% bootstrap interval over (task, seed) pairs ({BOOTSTRAP_RESAMPLES} resamples):",
        "",
        "| algorithm | headroom closed (%) | 95% interval | (task, seed) pairs |",
        "|---|---:|---:|---:|",
    ]
    for algo in algos:
        s = results["summary"][algo]
        lines.append(f"| {algo} | {s['mean']:.1f} | [{s['low']:.1f}, {s['high']:.1f}] | {s['pairs']} |")
    lines += [
        "",
        "Every task at a glance (test metric, mean over seeds; the tables below give the spread):",
        "",
    ]
    lines += format_overview(results)
    for name in config["tasks"]:
        spec = config["task_specs"][name]
        start = results["start"][name]
        metric = {"exact_match": "exact match", "bleu": "BLEU / 100", "mean_reward": "mean reward"}[
            spec["metric"]
        ]
        lines += [
            "",
            f"## {name}: `{spec['env_id']}` {json.dumps(spec['task_kwargs']) if spec['task_kwargs'] else ''}",
            "",
            f"Metric: test {metric}; reward `{json.dumps(spec['reward'])}`; {spec['timesteps']} env steps per "
            f"online run; offline: {start['offline_steps']} gradient steps on the start's "
            f"{start['offline_episodes']} sampled episodes.",
            "",
            "| policy | test metric | headroom closed (%) | test mean reward | wall time per run (s) |",
            "|---|---:|---:|---:|---:|",
            f"| MLE start ({spec['start_examples']} pairs) | {start['test_metric']:.3f} | 0 | "
            f"{start['test_mean_reward']:.3f} | {start['seconds']:.1f} |",
        ]
        for algo in algos:
            runs = [r for r in results["runs"] if r["task"] == name and r["algo"] == algo]
            if not runs:
                continue
            closed = [r["headroom_closed"] for r in runs if r["headroom_closed"] is not None]
            lines.append(
                f"| {algo} | {mean_std([r['test_metric'] for r in runs], 3)} | "
                f"{mean_std(closed, 1) if closed else '—'} | "
                f"{mean_std([r['test_mean_reward'] for r in runs], 3)} | "
                f"{mean_std([r['seconds'] for r in runs], 1)} |"
            )
    return "\n".join(lines) + "\n"


def format_overview(results: dict[str, Any]) -> list[str]:
    """One markdown table, a row per policy (the MLE start, then each algorithm) and a column per task: the
    test metric's mean over seeds."""
    config = results["config"]
    tasks = config["tasks"]
    lines = ["| policy | " + " | ".join(tasks) + " |", "|---|" + "---:|" * len(tasks)]
    lines.append(
        "| MLE start | " + " | ".join(f"{results['start'][t]['test_metric']:.3f}" for t in tasks) + " |"
    )
    for algo in config["algos"]:
        cells = []
        for task in tasks:
            values = [r["test_metric"] for r in results["runs"] if r["task"] == task and r["algo"] == algo]
            cells.append(f"{np.mean(values):.3f}" if values else "—")
        lines.append(f"| {algo} | " + " | ".join(cells) + " |")
    return lines


# ---------------------------------------------------------------------- the run


def run_suite(
    mode: str = "default",
    tasks: list[str] | None = None,
    algos: list[str] | None = None,
    seeds: list[int] | None = None,
    workers: int = 1,
    out: str | Path = "runs/bench_suite",
) -> dict[str, Any]:
    """Run the suite, write ``results.md`` / ``results.json`` / ``learning_curves.png`` into ``out``, print
    the tables and the machine; returns what ``results.json`` holds.

    :param mode: ``"default"``, ``"quick"`` or ``"smoke"`` (:data:`MODES`).
    :param tasks: / :param algos: / :param seeds: override the mode's (default: every task of the mode,
        every algorithm of :data:`agents.algorithms.ALGORITHMS`).
    :param workers: runs at once, each in its own process with one thread.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {list(MODES)}")
    settings = MODES[mode]
    tasks = list(dict.fromkeys(tasks or settings["tasks"]))
    algos = list(dict.fromkeys(algos or sorted(ALGORITHMS)))
    seeds = list(dict.fromkeys(settings["seeds"] if seeds is None else seeds))
    for name in tasks:
        if name not in SUITE_TASKS:
            raise ValueError(f"unknown suite task {name!r}; valid: {list(SUITE_TASKS)}")
    for algo in algos:
        if algo not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {algo!r}; valid: {sorted(ALGORITHMS)}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out = Path(out)
    (out / "starts").mkdir(parents=True, exist_ok=True)
    specs = {name: sized(SUITE_TASKS[name], mode, settings["budget"]) for name in tasks}
    results: dict[str, Any] = {
        "config": {
            "mode": mode,
            "tasks": tasks,
            "algos": algos,
            "seeds": seeds,
            "max_examples": settings["max_examples"],
            "policy": POLICY_SIZE,
            "algo_settings": {algo: settings_of(algo) for algo in algos},
            "task_specs": {name: asdict(spec) for name, spec in specs.items()},
            "workers": workers,
        },
        "start": {},
        "runs": [],
    }
    started = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    # Read with the runs' thread count: every run (here or in a worker) uses one thread.
    results["config"]["machine"] = f"{describe_machine('cpu')}; {workers} run(s) at once"
    jobs = []
    try:
        for name, spec in specs.items():
            env = spec.make_env()
            begun = time.perf_counter()
            start = build_start(spec, env)
            seconds = time.perf_counter() - begun
            path = out / "starts" / f"{name}.pt"
            start.save(path)
            start_scores = score(spec, start, env, settings["max_examples"])
            # PPO's episodes are about as long as the start's samples (eos counted as a step).
            sampled = evaluate(start, env, split="validation", method="sample", max_examples=64)
            offline_episodes, offline_steps = ppo_budget(spec.timesteps, sampled["mean_length"] + 1)
            results["start"][name] = {
                **{f"test_{key}": value for key, value in start_scores.items()},
                "seconds": seconds,
                "offline_steps": offline_steps,
                "offline_episodes": offline_episodes,
            }
            print(f"{name}: MLE start test metric {start_scores['metric']:.3f} ({seconds:.1f}s)", flush=True)
            jobs += [
                {
                    "task": name,
                    "spec": asdict(spec),
                    "algo": algo,
                    "seed": seed,
                    "timesteps": spec.timesteps,
                    "max_examples": settings["max_examples"],
                    "start_path": str(path),
                    "offline_steps": offline_steps,
                    "offline_episodes": offline_episodes,
                }
                for algo in algos
                for seed in seeds
            ]
        for record in run_jobs(jobs, workers):
            results["runs"].append(record)
            print(
                f"{record['task']} {record['algo']} seed {record['seed']}: test metric "
                f"{record['test_metric']:.3f} ({record['seconds']:.1f}s)",
                flush=True,
            )
    finally:
        torch.set_num_threads(threads)
    results["total_seconds"] = time.perf_counter() - started
    add_headroom(results)
    table = format_results(results)
    (out / "results.md").write_text(table + "\n" + results["config"]["machine"] + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    plot_curves(
        {**results, "config": {"tasks": tasks, "algos": [a for a in algos if a not in OFFLINE_ALGORITHMS]}},
        out / "learning_curves.png",
    )
    print("\n" + table)
    print(results["config"]["machine"])
    print(
        f"total {results['total_seconds']:.0f}s; wrote results.md, results.json, learning_curves.png to {out}"
    )
    return results


def sized(spec: SuiteTask, mode: str, budget: float | None) -> SuiteTask:
    """The task with the mode's budget: the full one, a fraction, or the smoke test's tiny one."""
    if budget is None:
        return replace(spec, timesteps=SMOKE_TIMESTEPS, start_examples=SMOKE_START_EXAMPLES)
    return replace(spec, timesteps=max(1, int(spec.timesteps * budget)))


def run_jobs(jobs: list[dict[str, Any]], workers: int):
    """The records of ``jobs``, in order; in ``workers`` processes when more than one."""
    if workers == 1:
        for job in jobs:
            yield run_one(job)
        return
    # Spawned workers: a forked one would inherit this process's torch thread pools.
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    previous = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            yield from pool.map(run_one, jobs)
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


__all__ = ["MODES", "SUITE_TASKS", "SuiteTask", "bootstrap_interval", "headroom_closed", "run_suite"]
