"""Old entry point, kept working: ``python -m agents.benchmark_rl`` is ``lmrl-gym bench ppo-vs-sb3``; the
benchmark itself is :mod:`agents.bench.ppo_vs_sb3` (re-exported here)."""

import sys

from agents.bench.ppo_vs_sb3 import *  # noqa: F403
from agents.bench.ppo_vs_sb3 import format_report, ours_probe_length, run, sb3_buffer_bytes  # noqa: F401
from agents.commands.bench import run_benchmark_command


def main(argv: list[str] | None = None) -> int:
    return run_benchmark_command("ppo-vs-sb3", sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
