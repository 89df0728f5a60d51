"""The ``lmrl-gym`` command line: train, evaluate and benchmark agents on the TextGen environments.

Examples::

    lmrl-gym train --env TextGen-v0 --algo ppo --pretrain-epochs 1 --timesteps 20000 --seed 0 --out runs/x
    lmrl-gym train --task my.jsonl --reward exact_match --env-kwargs '{"max_new_tokens": 6}' --out runs/mine
    lmrl-gym train --env TextGen-Copy-v0 --policy hf:gpt2 --learning-rate 1e-5 --kl-coef 0.1 --out runs/gpt2
    lmrl-gym eval --checkpoint runs/x/policy.pt --env TextGen-v0 --method beam --beam-size 4
    lmrl-gym eval --checkpoint runs/gpt2/policy --env TextGen-Copy-v0
    lmrl-gym irl --env TextGen-Oracle-v0 --timesteps 60000 --out runs/irl
    lmrl-gym bench env --num-envs 256
    lmrl-gym bench decoding --batch 128

``train`` writes ``model.zip`` (the algorithm checkpoint), ``policy.pt`` (the policy alone, for ``eval``; a
folder ``policy`` for ``--policy hf:X``), ``progress.csv`` (Stable-Baselines3's CSV log, one row per
rollout) and ``learning_curve.png`` into ``--out``. ``--policy`` is ``transformer`` (our own, built for the
env) or ``hf:PATH_OR_NAME`` (any ``transformers`` causal or encoder-decoder model, as an
:class:`~agents.policies.hf.HFPolicy`; the env then speaks its tokenizer and has one action per model
output unless ``--tokenizer`` / ``--env-kwargs`` say otherwise). ``irl`` learns a reward from
demonstrations (inverse RL) and writes ``reward_model.pt`` (for ``gym.make(id, reward="learned",
reward_model=...)``), ``policy.zip`` and ``progress.csv``.

``--env-kwargs JSON`` passes keyword arguments to ``gym.make`` for the env (RL Zoo's flag), with the
shortcuts ``--task``, ``--reward``, ``--task-kwargs`` and ``--tokenizer``; ``eval`` needs the ones the
policy was trained with.
Invalid arguments exit with code 2 and a one-line message naming the valid choices.
"""

# ruff: noqa: E402  (the package-clash check must run before the other agents modules are imported)
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

import lmrl_gym  # noqa: F401  (registers the TextGen ids that --env offers)
from agents.package_clash import check_package_clash

# Before the other agents modules, as in agents/__init__.py: where another distribution's agents/__init__.py
# won (the OpenAI Agents SDK's, installed after ours), ours never ran this check, and the next import may be
# that distribution's file (both have an agents/models).
check_package_clash()

from agents.algorithms import ALGORITHMS, OFFLINE_ALGORITHMS
from agents.callbacks import TextEvalCallback
from agents.commands.arguments import (  # noqa: F401  (the other names: agents.cli's, before they moved)
    CLI_ENV_ARGUMENTS,
    ENV_SHORTCUTS,
    SET_BY_THE_COMMAND,
    PolicyChoice,
    StoreOnce,
    add_env_arguments,
    env_ids,
    env_kwargs,
    env_kwargs_object,
    json_object,
    make_env,
    non_negative_float,
    non_negative_int,
    policy_choice,
    positive_float,
    positive_int,
)
from agents.commands.bench import BENCHMARKS, run_benchmark_command
from agents.evaluation import evaluate, format_evaluation
from agents.models import ARCHS
from agents.policies.base import Policy
from agents.policies.registry import load_policy, policy_kind_of
from agents.policies.transformer import TransformerPolicy
from agents.pretrain import pretrain

METHODS = ("greedy", "beam", "sample")
SPLITS = ("train", "validation", "test")
# RL defaults when the policy was MLE-pretrained first (--pretrain-epochs > 0): fine-tuning wants a much
# smaller step than training from scratch, or the first updates undo the pretraining (PPO at 1e-4 took the
# 2 x 128 TextGen-v0 model from test BLEU 73.1 to 67.1; at 1e-5 it rose to 74.3 over three seeds), and a
# small KL leash to the start (0.1 lowered BLEU to 67.4 on this [0, 1] reward; 0.01 did not hurt).
# A2C and REINFORCE take one gradient step per rollout where PPO takes n_epochs x n_envs / batch_size
# (16 by default), hence their larger step.
# After pretraining: PPO's from examples/finetune_from_mle.py (TextGen-v0, 2 x 128), A2C / REINFORCE from the
# algorithms benchmark; NLPO and GRPO as PPO (clipped, several samples per prompt), RLOO as REINFORCE, the
# offline methods at the MLE rate their tests use.
FINETUNE_LEARNING_RATES = {
    "ppo": 1e-5,
    "a2c": 1e-4,
    "reinforce": 1e-4,
    "nlpo": 1e-5,
    "grpo": 1e-5,
    "rloo": 1e-4,
    "filtered_bc": 1e-3,
    "ilql": 1e-3,
}
FINETUNE_KL_COEF = 0.01
REWARD_COLUMN = "rollout/ep_rew_mean"
TIMESTEPS_COLUMN = "time/total_timesteps"
VALIDATION_COLUMN = "eval/mean_reward"  # logged by agents.callbacks.TextEvalCallback
# Our transformer's size flags, with their defaults (None in the parser: a Hugging Face policy refuses them).
TRANSFORMER_DEFAULTS = {"arch": "causal", "n_layer": 2, "n_embd": 128}
# Errors of loading a transformers model: a missing or unreadable folder, an unknown hub name or no network
# (OSError), a folder of another kind of model (ValueError), the hf extra not installed (ImportError).
HF_LOAD_ERRORS = (OSError, ValueError, ImportError)


def validation_checks(
    env: gym.Env, eval_freq: int, max_examples: int | None, out: Path
) -> TextEvalCallback | None:
    """Greedy checks on the validation split every ``eval_freq`` rollouts, the best policy kept in ``out``
    (``--eval-freq``, shared by ``train`` and the demo); None when ``eval_freq`` is 0 (no checks)."""
    if eval_freq == 0:
        return None
    return TextEvalCallback(env, eval_freq=eval_freq, max_examples=max_examples, best_model_save_path=out)


def progress_series(
    csv_path: str | Path, columns: tuple[str, ...]
) -> dict[str, tuple[list[float], list[float]]]:
    """``{column: (timesteps, values)}`` from an SB3 ``progress.csv``, keeping the rows where it was recorded
    (SB3 leaves a cell empty when a key was not recorded in that dump; a missing column gives empty lists)."""
    series: dict[str, tuple[list[float], list[float]]] = {column: ([], []) for column in columns}
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            for column, (steps, values) in series.items():
                if row.get(column) and row.get(TIMESTEPS_COLUMN):
                    steps.append(float(row[TIMESTEPS_COLUMN]))
                    values.append(float(row[column]))
    return series


def plot_learning_curve(csv_path: str | Path, png_path: str | Path, title: str = "") -> int:
    """Plot mean episode reward against timesteps from an SB3 ``progress.csv`` into ``png_path``.

    Where the CSV also has validation checks (``eval/mean_reward`` from
    :class:`~agents.callbacks.TextEvalCallback`), they are drawn as a second series with the best one
    marked: the training curve averages sampled episodes, the checks decode greedily.

    :return: the number of training points plotted (0 when the CSV has no reward rows; the PNG is still
        written, with a note, so that a run always leaves its four files).
    """
    # Agg: no display is needed (servers, CI), and it must be chosen before pyplot is imported.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = progress_series(csv_path, (REWARD_COLUMN, VALIDATION_COLUMN))
    steps, rewards = series[REWARD_COLUMN]
    check_steps, checks = series[VALIDATION_COLUMN]
    fig, ax = plt.subplots(figsize=(6, 4))
    if steps:
        ax.plot(steps, rewards, marker="o", markersize=3, label="training episodes (sampled, last 100)")
    else:
        ax.text(0.5, 0.5, "no rollouts logged", ha="center", va="center", transform=ax.transAxes)
    if checks:
        best = max(range(len(checks)), key=checks.__getitem__)  # the first best, as the callback keeps it
        ax.plot(check_steps, checks, marker="s", markersize=3, label="validation checks (greedy)")
        ax.plot(check_steps[best], checks[best], "k*", markersize=12, label="best validation check")
        ax.legend(loc="lower right")
    ax.set_xlabel("timesteps (generated tokens)")
    ax.set_ylabel("mean episode reward")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return len(steps)


def rl_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``learning_rate`` and the KL leash for the algorithm: what the user passed, else the fine-tuning
    defaults after pretraining, else the algorithm's own learning rate and no KL term. GRPO's KL term is
    ``beta`` (in its loss); the offline algorithms have none (``--kl-coef`` is then an error, raised by
    them)."""
    pretrained = args.pretrain_epochs > 0
    settings: dict[str, Any] = {}
    if args.learning_rate is not None:
        settings["learning_rate"] = args.learning_rate
    elif pretrained:
        settings["learning_rate"] = FINETUNE_LEARNING_RATES[args.algo]
    kl = args.kl_coef if args.kl_coef is not None else (FINETUNE_KL_COEF if pretrained else 0.0)
    if args.algo == "grpo":
        settings["beta"] = kl
    elif args.algo not in OFFLINE_ALGORITHMS or args.kl_coef is not None:
        settings["kl_coef"] = kl
    return settings


def hf_env_defaults(tokenizer: str | Path, policy: Any) -> dict[str, Any]:
    """The env arguments a Hugging Face policy implies where the user gave none: its tokenizer (the model's
    folder or hub name, loaded by the env as the policy loaded it) and one action per model output."""
    return {"tokenizer": str(tokenizer), "num_actions": policy.num_actions}


def bind_policy(parser: argparse.ArgumentParser, flag: str, policy: Policy, env: gym.Env) -> None:
    """``policy.check_env(env)``; a mismatch (another tokenizer, action count or widths) exits 2."""
    try:
        policy.check_env(env)
    except ValueError as err:
        parser.error(f"argument {flag}: {err}")


def train_policy(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[Policy, gym.Env]:
    """The policy ``--policy`` names and the env it trains on (an HF policy's env speaks its tokenizer)."""
    choice: PolicyChoice = args.policy
    if choice.kind == "hf":
        from agents.policies.hf import HFPolicy

        for name in TRANSFORMER_DEFAULTS:
            if getattr(args, name) is not None:
                parser.error(
                    f"argument --{name.replace('_', '-')}: sizes our transformer (--policy transformer); "
                    f"--policy hf:{choice.name} brings its own architecture"
                )
        try:
            policy = HFPolicy.from_pretrained(choice.name, device=args.device)
        except HF_LOAD_ERRORS as err:
            parser.error(
                f"argument --policy: cannot load {choice.name!r} as a transformers language model: {err}"
            )
        env = make_env(parser, args, hf_env_defaults(choice.name, policy))
        bind_policy(parser, "--policy", policy, env)
        return policy, env
    env = make_env(parser, args)
    sizes = {name: default if getattr(args, name) is None else getattr(args, name)
             for name, default in TRANSFORMER_DEFAULTS.items()}  # fmt: skip
    # Seed the weight initialisation too: the algorithm's seed only covers episodes and sampling.
    torch.manual_seed(args.seed)
    return TransformerPolicy.for_env(env, device=args.device, **sizes), env


# ---------------------------------------------------------------------- commands


def cmd_train(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from stable_baselines3.common.logger import configure

    policy, env = train_policy(parser, args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if args.pretrain_epochs > 0:
        history = pretrain(
            policy,
            env,
            epochs=args.pretrain_epochs,
            learning_rate=args.pretrain_learning_rate,
            seed=args.seed,
            progress_bar=not args.no_progress_bar,
        )
        print(f"pretrained {len(history)} epoch(s): validation loss {history[-1]['validation_loss']:.4f}")
    eval_kwargs = {"split": "test", "method": "greedy", "max_examples": args.eval_examples}
    before = evaluate(policy, env, **eval_kwargs)
    print(format_evaluation(before, names=["before RL"]), flush=True)

    settings = rl_settings(args)
    print(", ".join(f"{key} {value}" for key, value in settings.items()) or "algorithm defaults", flush=True)
    if args.algo not in OFFLINE_ALGORITHMS:
        settings["n_envs"] = args.n_envs
    model = ALGORITHMS[args.algo](policy, env, seed=args.seed, **settings)
    logger = configure(str(out), ["stdout", "csv"])
    model.set_logger(logger)
    validation = validation_checks(env, args.eval_freq, args.eval_examples, out)
    model.learn(args.timesteps, callback=validation, progress_bar=not args.no_progress_bar)
    logger.close()  # flushes progress.csv before it is plotted
    model.save(out / "model.zip")
    policy = model.policy  # how the algorithm acts (ILQL's adds its Q-values to the logits)
    policy_name = policy_kind_of(policy).checkpoint_name  # policy.pt, or a folder (HFPolicy, ILQL's policy)
    policy.save(out / policy_name)
    points = plot_learning_curve(
        out / "progress.csv", out / "learning_curve.png", f"{args.algo.upper()} on {args.env}"
    )

    results, names = [before, evaluate(policy, env, **eval_kwargs)], ["before RL", "after RL (final)"]
    written = f"model.zip, {policy_name}"
    # Fewer rollouts than --eval-freq leave no validation check and no best_policy.pt.
    best = validation.best_policy(env) if validation else None
    if best is not None:
        results.append(evaluate(best, env, **eval_kwargs))
        names.append("best on validation")
        written += f", best_{policy_name}"
    print(format_evaluation(*results, names=names))
    print(
        f"\n{model.num_timesteps} timesteps in {time.perf_counter() - started:.0f}s; wrote {written}, "
        f"progress.csv and learning_curve.png ({points} points) to {out}"
    )
    return 0


def cmd_eval(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    checkpoint = Path(args.checkpoint)
    # What train writes: a file for our transformer, a folder for a Hugging Face policy or ILQL's policy.
    if checkpoint.is_file():
        kind = "transformer"
    elif (checkpoint / "ilql_policy.json").is_file():
        kind = "ilql"
    elif checkpoint.is_dir():
        kind = "hf"
    else:
        parser.error(f"argument --checkpoint: no such file or folder: {checkpoint}")
    same_env = (
        "give eval the --env, --task, --task-kwargs, --tokenizer and --env-kwargs the policy was trained with"
    )
    if kind in ("hf", "ilql"):
        try:
            policy = load_policy(kind, checkpoint, device=args.device)
        except HF_LOAD_ERRORS as err:
            parser.error(
                f"argument --checkpoint: {err} (eval reads the policy folder train or HFPolicy.save writes)"
            )
        base = getattr(policy, "base", policy)  # ILQL's acting policy wraps the language model
        hf_folder = checkpoint if kind == "hf" else checkpoint / "policy"
        defaults = hf_env_defaults(hf_folder, base) if hasattr(base, "num_actions") else None
        env = make_env(parser, args, defaults)
        try:
            policy.check_env(env)
        except ValueError as err:
            parser.error(f"argument --checkpoint: {err} ({same_env})")
    else:
        env = make_env(parser, args)
        try:
            policy = load_policy("transformer", checkpoint, env=env, device=args.device)
        except ValueError as err:
            # A corrupt file or one trained on another env: a usage error, not a crash with a traceback.
            parser.error(f"argument --checkpoint: {err} ({same_env})")
    result = evaluate(
        policy,
        env,
        split=args.split,
        method=args.method,
        beam_size=args.beam_size,
        max_examples=args.max_examples,
        seed=args.seed,
    )
    print(format_evaluation(result))
    return 0


def read_demonstrations(parser: argparse.ArgumentParser, path: str) -> list[tuple[str, str]]:
    """One demonstration per non-empty line: ``prompt<TAB>text``, or just ``text`` (empty prompt)."""
    file = Path(path)
    if not file.is_file():
        parser.error(f"argument --demonstrations: no such file: {file}")
    pairs = []
    for line in file.read_text(encoding="utf-8").splitlines():
        if line.strip():
            prompt, _, text = line.rpartition("\t")
            pairs.append((prompt, text))
    if not pairs:
        parser.error(f"argument --demonstrations: {file} has no demonstrations (one per line)")
    return pairs


def cmd_irl(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from stable_baselines3.common.logger import configure

    from agents.irl import IRL
    from agents.irl.evaluation import reward_quality
    from lmrl_gym.tasks.oracle import OracleTask

    env = make_env(parser, args)
    demonstrations = read_demonstrations(parser, args.demonstrations) if args.demonstrations else None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    try:
        irl = IRL(
            "TransformerPolicy",
            env,
            demonstrations=demonstrations,
            reward_kwargs={"n_layer": args.reward_n_layer, "n_embd": args.reward_n_embd},
            loss=args.loss,
            policy_algorithm=args.policy_algo,
            alpha=args.alpha,
            reward_learning_rate=args.reward_learning_rate,
            l2_coef=args.l2_coef,
            n_envs=args.n_envs,
            policy_kwargs={"n_layer": args.n_layer, "n_embd": args.n_embd},
            seed=args.seed,
            device=args.device,
        )
    except ValueError as err:  # e.g. demonstrations with words outside the env's vocabulary
        parser.error(str(err))
    task = env.unwrapped.task
    oracle = isinstance(task, OracleTask)
    before = reward_quality(irl.score, task) if oracle else None
    logger = configure(str(out), ["stdout", "csv"])
    irl.set_logger(logger)
    started = time.perf_counter()
    irl.learn(args.timesteps, progress_bar=not args.no_progress_bar)
    logger.close()
    reward_path, policy_path = irl.save(out)
    if oracle:
        after = reward_quality(irl.score, task)
        print("\n| learned reward vs the oracle (held-out probes) | untrained | after IRL |")
        print("|---|---:|---:|")
        for key, label in (
            ("spearman", "Spearman with oracle log-prob"),
            ("auc", "AUC oracle vs uniformly random"),
            ("auc_matched", "AUC oracle vs random of the same lengths"),
        ):
            print(f"| {label} | {before[key]:.3f} | {after[key]:.3f} |")
        print(f"(the oracle's own log-prob scores {after['auc_matched_oracle']:.3f} on the same-length AUC)")
    print(
        f"\n{irl.num_timesteps} timesteps in {time.perf_counter() - started:.0f}s; wrote {reward_path.name}, "
        f"{policy_path.name} and progress.csv to {out}"
    )
    return 0


def cmd_bench(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    return run_benchmark_command(args.benchmark, args.bench_args)


# ---------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmrl-gym",
        description="Train, evaluate and benchmark RL agents on the lmrl-gym text generation environments.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,eval,irl,bench}")

    train = commands.add_parser("train", help="pretrain (optional) and train a policy with an RL algorithm")
    add_env_arguments(train)
    train.add_argument("--algo", default="ppo", choices=sorted(ALGORITHMS), help="default: %(default)s")
    train.add_argument(
        "--policy",
        type=policy_choice,
        default=PolicyChoice("transformer"),
        metavar="{transformer,hf:PATH_OR_NAME}",
        help="transformer: our own transformer, built for the env (default); hf:PATH_OR_NAME: a transformers "
        "causal or encoder-decoder model by local folder or hub name (needs the hf extra); its env uses the "
        "model's tokenizer (unless --tokenizer) and one action per model output",
    )
    sizes = TRANSFORMER_DEFAULTS
    train.add_argument(
        "--arch", default=None, choices=ARCHS, help=f"--policy transformer only (default: {sizes['arch']})"
    )
    train.add_argument(
        "--n-layer",
        type=positive_int,
        default=None,
        help=f"--policy transformer only (default: {sizes['n_layer']})",
    )
    train.add_argument(
        "--n-embd",
        type=positive_int,
        default=None,
        help=f"--policy transformer only (default: {sizes['n_embd']})",
    )
    train.add_argument(
        "--pretrain-epochs",
        type=non_negative_int,
        default=0,
        help="MLE epochs before RL (default: 0); above 0, RL fine-tunes with a smaller learning rate and a "
        "small KL penalty unless --learning-rate / --kl-coef are given",
    )
    train.add_argument(
        "--pretrain-learning-rate", type=positive_float, default=1e-3, help="default: %(default)s"
    )
    train.add_argument(
        "--timesteps",
        type=positive_int,
        default=20000,
        help="RL budget in env steps = tokens (default: %(default)s)",
    )
    train.add_argument(
        "--n-envs", type=positive_int, default=64, help="episodes per rollout (default: %(default)s)"
    )
    finetune_rates = ", ".join(f"{algo} {rate:g}" for algo, rate in FINETUNE_LEARNING_RATES.items())
    train.add_argument(
        "--learning-rate",
        type=positive_float,
        default=None,
        help="RL learning rate (default: the algorithm's own from scratch; with --pretrain-epochs > 0 the "
        f"fine-tuning rate: {finetune_rates})",
    )
    train.add_argument(
        "--kl-coef",
        type=non_negative_float,
        default=None,
        help="weight of the per-token KL penalty to the start policy (default: 0 from scratch; "
        f"{FINETUNE_KL_COEF:g} with --pretrain-epochs > 0)",
    )
    train.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    train.add_argument("--device", default="auto", help="auto, cpu, cuda, ... (default: %(default)s)")
    train.add_argument(
        "--eval-examples",
        type=positive_int,
        default=None,
        help="evaluate on the first N test examples only (default: all)",
    )
    train.add_argument(
        "--eval-freq",
        type=non_negative_int,
        default=10,
        help="rollouts between greedy checks on the validation split (first --eval-examples examples); the "
        "best policy is written to best_policy.pt and evaluated at the end. 0: no checks "
        "(default: %(default)s)",
    )
    train.add_argument("--out", required=True, help="output folder (created if missing)")
    train.add_argument("--no-progress-bar", action="store_true", help="hide the progress bars")
    train.set_defaults(handler=cmd_train, subparser=train)

    ev = commands.add_parser(
        "eval", help="evaluate a saved policy (policy.pt, or an HF policy folder) and print the metrics table"
    )
    ev.add_argument(
        "--checkpoint",
        required=True,
        help="a policy.pt written by train or TransformerPolicy.save, or a policy folder written by train "
        "--policy hf:X or HFPolicy.save (its env uses the folder's tokenizer unless --tokenizer is given)",
    )
    add_env_arguments(ev)
    ev.add_argument("--split", default="test", choices=SPLITS, help="default: %(default)s")
    ev.add_argument("--method", default="greedy", choices=METHODS, help="default: %(default)s")
    ev.add_argument("--beam-size", type=positive_int, default=4, help="default: %(default)s")
    ev.add_argument("--max-examples", type=positive_int, default=None, help="default: the whole split")
    ev.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    ev.add_argument("--device", default="auto", help="default: %(default)s")
    ev.set_defaults(handler=cmd_eval, subparser=ev)

    irl = commands.add_parser(
        "irl",
        help="inverse RL: learn a reward from demonstrations (and a policy on it)",
        description="Maximum-entropy inverse RL (agents.IRL). Demonstrations: the task's training "
        "references, or --demonstrations FILE. On an oracle task it also prints how well the learned "
        "reward ranks held-out texts against the true log-probability.",
    )
    add_env_arguments(irl, default_env="TextGen-Oracle-v0")
    irl.add_argument(
        "--demonstrations",
        default=None,
        metavar="FILE",
        help="one demonstration per line, 'prompt<TAB>text' or 'text' (default: the task's training references)",
    )
    irl.add_argument("--loss", default="maxent", choices=("maxent", "airl"), help="default: %(default)s")
    irl.add_argument(
        "--policy-algo",
        default="ppo",
        choices=("ppo", "reinforce"),
        help="policy update (default: %(default)s)",
    )
    irl.add_argument(
        "--timesteps", type=positive_int, default=60000, help="sampled tokens (default: %(default)s)"
    )
    irl.add_argument(
        "--n-envs", type=positive_int, default=64, help="episodes per iteration (default: %(default)s)"
    )
    irl.add_argument(
        "--alpha", type=non_negative_float, default=1.0, help="entropy weight (default: %(default)s)"
    )
    irl.add_argument("--reward-learning-rate", type=positive_float, default=1e-3, help="default: %(default)s")
    irl.add_argument("--l2-coef", type=non_negative_float, default=0.01, help="default: %(default)s")
    irl.add_argument("--reward-n-layer", type=positive_int, default=1, help="default: %(default)s")
    irl.add_argument("--reward-n-embd", type=positive_int, default=64, help="default: %(default)s")
    irl.add_argument("--n-layer", type=positive_int, default=2, help="policy layers (default: %(default)s)")
    irl.add_argument("--n-embd", type=positive_int, default=64, help="policy width (default: %(default)s)")
    irl.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    irl.add_argument("--device", default="auto", help="default: %(default)s")
    irl.add_argument("--out", required=True, help="output folder (created if missing)")
    irl.add_argument("--no-progress-bar", action="store_true", help="hide the progress bar")
    irl.set_defaults(handler=cmd_irl, subparser=irl)

    bench = commands.add_parser(
        "bench",
        help="benchmarks: env (vector env and BLEU speed), decoding (KV-cached decoding speed), "
        "algorithms (algorithms over seeds on chosen tasks), suite (every algorithm on every built-in task, "
        "headroom closed) or ppo-vs-sb3 (PPO speed, storage and FLOPs against Stable-Baselines3 PPO)",
        description="Run one benchmark with the remaining arguments: env (lmrl_gym.benchmark), decoding "
        "(agents.bench.decoding), algorithms (agents.bench.algorithms), suite (agents.bench.suite) or "
        "ppo-vs-sb3 (agents.bench.ppo_vs_sb3); e.g. 'lmrl-gym bench suite --help'.",
    )
    bench.add_argument("benchmark", choices=BENCHMARKS)
    bench.add_argument("bench_args", nargs=argparse.REMAINDER, help="arguments of that benchmark")
    bench.set_defaults(handler=cmd_bench, subparser=bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (argparse exits with 2 on invalid arguments)."""
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    # Usage errors are reported by the subcommand's own parser, whose usage line is the relevant one.
    return args.handler(args.subparser, args)


if __name__ == "__main__":
    sys.exit(main())
