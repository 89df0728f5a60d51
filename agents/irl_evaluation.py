"""Old import path, kept working: ``agents.irl_evaluation`` *is* :mod:`agents.irl.evaluation` (one module)."""

import sys

from agents.irl import evaluation

sys.modules[__name__] = evaluation
