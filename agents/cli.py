"""Old entry point, kept working: ``python -m agents.cli`` runs ``lmrl-gym``, and ``agents.cli`` *is* the
module :mod:`agents.commands.cli` (one module object: its functions and constants are the same ones)."""

import sys

# First, as in agents/commands/cli.py: where another distribution's agents/__init__.py won, the import
# below may already be that distribution's file.
from agents.package_clash import check_package_clash

check_package_clash()

from agents.commands import cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(cli.main())
sys.modules[__name__] = cli
