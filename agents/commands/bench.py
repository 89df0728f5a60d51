"""``lmrl-gym bench NAME [ARGS]``: the flags of each benchmark, parsed here and handed to the benchmark's
module in :mod:`agents.bench` (which never parses arguments: the shared argument types live here, in
:mod:`agents.commands.arguments`). The env benchmark is the env suite's own, :mod:`lmrl_gym.benchmark`.

Invalid values exit with code 2 and a one-line message, as everywhere on the command line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from agents.commands.arguments import PolicyChoice, env_ids, non_negative_int, policy_choice, positive_int
from agents.devices import resolve_device

BENCHMARKS = ("env", "decoding", "algorithms", "suite", "ppo-vs-sb3", "vs-trl")


def _parser(name: str, module_doc: str | None) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog=f"lmrl-gym bench {name}",
        description=module_doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def hf_size(text: str) -> str:
    """An argparse type: a GPT-2 size for :func:`agents.bench.hf_decoding.parse_size`."""
    from agents.bench.hf_decoding import parse_size

    try:
        parse_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def bench_decoding(argv: list[str]) -> int:
    from agents.bench import decoding, hf_decoding
    from agents.commands.arguments import positive_float

    parser = _parser("decoding", f"{decoding.__doc__}\n{hf_decoding.__doc__}")
    hf = hf_decoding.DEFAULT_SETTINGS
    parser.add_argument(
        "--batch", type=positive_int, default=None, help=f"default: 256 ({hf['batch']} for HF)"
    )
    parser.add_argument(
        "--new-tokens", type=positive_int, default=None, help=f"default: 64 ({hf['new_tokens']} for HF)"
    )
    parser.add_argument(
        "--prompt-tokens", type=positive_int, default=None, help=f"default: 16 ({hf['prompt_tokens']} for HF)"
    )
    ours_only = "our TransformerLM only; default: %(default)s"
    parser.add_argument("--vocab", type=positive_int, default=1000, help=ours_only)
    parser.add_argument("--n-layer", type=positive_int, default=2, help=ours_only)
    parser.add_argument("--n-embd", type=positive_int, default=128, help=ours_only)
    parser.add_argument("--arch", default="causal", choices=["causal", "seq2seq"], help=ours_only)
    parser.add_argument("--repeats", type=positive_int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--dtype",
        default="fp32",
        choices=decoding.DTYPES,
        help=f"bf16: under torch.autocast(bfloat16), fp32 weights; {ours_only}",
    )
    parser.add_argument(
        "--peak-tflops",
        type=positive_float,
        default=None,
        metavar="N",
        help="the device's peak TFLOP/s for the MFU column; default: NVIDIA's dense figure for the dtype by "
        "the GPU's name (known: H100, H200, A100, L40S, L40, L4, A10), else no MFU; our TransformerLM only",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time KV-cached sampling with the step compiled (TransformerPolicy(compile=True); "
        f"the first, untimed round compiles it); {ours_only}",
    )
    parser.add_argument(
        "--policy",
        type=policy_choice,
        default=PolicyChoice("transformer"),
        metavar="transformer|hf:PATH",
        help="transformer (default): our TransformerLM, the table above; hf:PATH: our rollout over this "
        "transformers causal LM (HFPolicy) against its model.generate",
    )
    parser.add_argument(
        "--hf-size",
        type=hf_size,
        default=None,
        metavar="SIZE",
        help="as --policy, on a random GPT-2 built locally (nothing downloaded): tiny (2 x 64, the tests'), "
        "LAYERSxWIDTH (64-wide heads) or LAYERSxWIDTHxHEADS, e.g. 6x512",
    )
    args = parser.parse_args(argv)
    hf_path = args.policy.name if args.policy.kind == "hf" else None
    if hf_path is not None and args.hf_size is not None:
        parser.error("give --policy hf:PATH or --hf-size, not both")
    if hf_path is not None or args.hf_size is not None:
        if args.dtype != "fp32" or args.peak_tflops is not None or args.compile:
            parser.error(
                "--dtype, --peak-tflops and --compile apply to our TransformerLM, not to --policy hf: or "
                "--hf-size"
            )
        settings = {
            "batch": args.batch or hf["batch"],
            "new_tokens": args.new_tokens or hf["new_tokens"],
            "prompt_tokens": args.prompt_tokens or hf["prompt_tokens"],
            "repeats": args.repeats,
            "device": args.device,
        }
        try:
            result = hf_decoding.run(policy=hf_path, hf_size=args.hf_size or "tiny", **settings)
        except (ValueError, OSError) as err:  # OSError: transformers' word for "no such model"
            parser.error(str(err))
        print(hf_decoding.format_report(result, settings))
        return 0
    settings = vars(args)
    del settings["policy"], settings["hf_size"]
    settings["batch"] = args.batch or 256
    settings["new_tokens"] = args.new_tokens or 64
    settings["prompt_tokens"] = args.prompt_tokens or 16
    result = decoding.run(**settings)
    print(decoding.format_report(result, settings))
    return 0


def bench_ppo_vs_sb3(argv: list[str]) -> int:
    from agents.bench import ppo_vs_sb3

    parser = _parser("ppo-vs-sb3", ppo_vs_sb3.__doc__)
    parser.add_argument("--env", dest="env_id", default="TextGen-v0", choices=env_ids(), metavar="ID")
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="episode cap (default: the env's); an untrained policy rarely samples eos early, so this "
        "sets the episode length, the quantity the speed ratio depends on",
    )
    parser.add_argument("--n-envs", type=positive_int, default=64)
    parser.add_argument("--timesteps", type=positive_int, default=4096)
    parser.add_argument("--repeats", type=positive_int, default=3)
    parser.add_argument("--n-layer", type=positive_int, default=2)
    parser.add_argument("--n-embd", type=positive_int, default=128)
    settings = vars(parser.parse_args(argv))
    if settings["max_new_tokens"] is not None and settings["max_new_tokens"] < 1:
        parser.error(f"argument --max-new-tokens: must be >= 1, got {settings['max_new_tokens']}")
    result = ppo_vs_sb3.run(**settings)
    print(ppo_vs_sb3.format_report(result, settings))
    return 0


def bench_vs_trl(argv: list[str]) -> int:
    import os

    import torch

    from agents.bench import vs_trl

    parser = _parser("vs-trl", vs_trl.__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick",
        action="store_const",
        const="quick",
        dest="mode",
        help=f"{vs_trl.MODES['quick']['updates']} updates, one seed",
    )
    mode.add_argument(
        "--smoke",
        action="store_const",
        const="smoke",
        dest="mode",
        help=f"{vs_trl.MODES['smoke']['updates']} updates, one seed (seconds: the tests' run)",
    )
    parser.set_defaults(mode="default")
    default = vs_trl.MODES["default"]
    parser.add_argument(
        "--updates",
        type=positive_int,
        default=None,
        help=f"timed updates per row and seed (default: {default['updates']}: 2 to 3 minutes per seed for the "
        "three rows on 2 CPU cores; or the mode's)",
    )
    parser.add_argument(
        "--warmup",
        type=positive_int,
        default=None,
        help=f"untimed updates first (default: {default['warmup']}, or the mode's)",
    )
    parser.add_argument(
        "--seeds",
        type=positive_int,
        default=None,
        help=f"seeds 0..N-1 (default: {default['seeds']}, or the mode's)",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=os.cpu_count() or 1,
        help="torch's intra-op threads, every row (default: all cores, %(default)s)",
    )
    parser.add_argument(
        "--precision",
        nargs="+",
        choices=vs_trl.PRECISIONS,
        default=["fp32"],
        help="one table per precision; bf16: autocast on both sides, fp32 weights (default: %(default)s)",
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    settings = {
        key: getattr(args, key) if getattr(args, key) is not None else value
        for key, value in vs_trl.MODES[args.mode].items()
    }
    try:
        device = resolve_device(args.device)
    except ValueError as err:
        parser.error(f"argument --device: {err}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"argument --device: {args.device!r}, but CUDA is not available here")
    results = []
    for precision in dict.fromkeys(args.precision):  # each once, in the order given
        try:
            result = vs_trl.run(precision=precision, threads=args.threads, device=args.device, **settings)
        except vs_trl.MissingTRLError as err:
            print(f"lmrl-gym bench vs-trl: error: {err}", file=sys.stderr)
            return 1
        print(vs_trl.format_report(result) + "\n", flush=True)
        results.append(result)
    if args.json is not None:
        vs_trl.write_json(results, args.json)
    return 0


def bench_algorithms(argv: list[str]) -> int:
    from agents.algorithms import ONLINE_ALGORITHMS
    from agents.bench import algorithms

    parser = _parser("algorithms", algorithms.__doc__)
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=list(algorithms.DEFAULT_TASKS),
        choices=env_ids(),
        metavar="ID",
        help=f"env ids (default: %(default)s); one of: {', '.join(env_ids())}",
    )
    online = sorted(ONLINE_ALGORITHMS)  # counted in env steps; the offline ones are in `bench suite`
    parser.add_argument(
        "--algos", nargs="+", default=online, choices=online, help="default: every online algorithm"
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="default: %(default)s")
    parser.add_argument(
        "--timesteps",
        type=positive_int,
        default=None,
        help=f"env steps (tokens) per run (default: {algorithms.FINETUNE_TIMESTEPS} from a pretrained "
        f"start, {algorithms.SCRATCH_TIMESTEPS} from scratch)",
    )
    parser.add_argument(
        "--pretrain-epochs",
        type=non_negative_int,
        default=None,
        help="MLE epochs of every task's start policy; 0: from scratch (untrained start and the "
        "from-scratch settings) (default: a short pretraining per task: "
        + ", ".join(f"{task} {n}" for task, n in algorithms.START_PRETRAIN_EPOCHS.items())
        + f", other tasks {algorithms.DEFAULT_PRETRAIN_EPOCHS})",
    )
    parser.add_argument(
        "--max-examples",
        type=positive_int,
        default=200,
        help="test examples to evaluate (default: %(default)s)",
    )
    parser.add_argument("--out", default="runs/bench_algorithms", help="output folder (default: %(default)s)")
    algorithms.run_benchmark(**vars(parser.parse_args(argv)))
    return 0


def bench_suite(argv: list[str]) -> int:
    from agents.algorithms import ALGORITHMS
    from agents.bench import suite

    parser = _parser("suite", suite.__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick", action="store_const", const="quick", dest="mode", help="one seed, a quarter of the budget"
    )
    mode.add_argument(
        "--smoke", action="store_const", const="smoke", dest="mode", help="two tasks, tiny budgets (seconds)"
    )
    parser.set_defaults(mode="default")
    parser.add_argument(
        "--tasks", nargs="+", choices=list(suite.SUITE_TASKS), default=None, help="default: the mode's tasks"
    )
    parser.add_argument(
        "--algos", nargs="+", choices=sorted(ALGORITHMS), default=None, help="default: every algorithm"
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default: the mode's seeds")
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        help="runs at once, one process each (default: %(default)s)",
    )
    parser.add_argument("--out", default="runs/bench_suite", help="output folder (default: %(default)s)")
    suite.run_suite(**vars(parser.parse_args(argv)))
    return 0


def bench_env(argv: list[str]) -> int:
    from lmrl_gym.benchmark import main

    main(argv)
    return 0


# Each imports its benchmark when run: a benchmark pulls in what it measures (SB3's PPO, matplotlib, ...).
COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "env": bench_env,
    "decoding": bench_decoding,
    "algorithms": bench_algorithms,
    "suite": bench_suite,
    "ppo-vs-sb3": bench_ppo_vs_sb3,
    "vs-trl": bench_vs_trl,
}


def run_benchmark_command(name: str, argv: list[str] | None = None) -> int:
    """Parse ``argv`` as the flags of benchmark ``name`` (one of :data:`BENCHMARKS`) and run it; 0 on success
    (argparse exits with 2 on invalid flags)."""
    if name not in COMMANDS:
        raise ValueError(f"unknown benchmark {name!r}; valid: {list(BENCHMARKS)}")
    return COMMANDS[name](list(argv or []))
