"""Old entry point, kept working: ``python -m agents.demo`` runs the demo, and ``agents.demo`` *is* the
module :mod:`agents.commands.demo` (one module object)."""

import sys

from agents.package_clash import check_package_clash

check_package_clash()

from agents.commands import demo  # noqa: E402

if __name__ == "__main__":
    sys.exit(demo.main())
sys.modules[__name__] = demo
