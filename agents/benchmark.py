"""Old entry point, kept working: ``python -m agents.benchmark`` is ``lmrl-gym bench decoding``; the
benchmark itself is :mod:`agents.bench.decoding` (re-exported here)."""

import sys

from agents.bench.decoding import *  # noqa: F403
from agents.bench.decoding import format_report, median_seconds, run  # noqa: F401
from agents.commands.bench import run_benchmark_command


def main(argv: list[str] | None = None) -> int:
    return run_benchmark_command("decoding", sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
