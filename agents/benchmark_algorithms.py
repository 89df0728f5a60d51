"""Old entry point, kept working: ``python -m agents.benchmark_algorithms`` is ``lmrl-gym bench
algorithms``; the benchmark itself is :mod:`agents.bench.algorithms` (re-exported here)."""

import sys

from agents.bench.algorithms import *  # noqa: F403
from agents.commands.bench import run_benchmark_command


def main(argv: list[str] | None = None) -> int:
    return run_benchmark_command("algorithms", sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
