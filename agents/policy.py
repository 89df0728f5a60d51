"""Old import path of :class:`TransformerPolicy`, kept working: ``agents.policy`` *is* the module
:mod:`agents.policies.transformer` (one module object, so its classes and functions are the same ones)."""

import sys

from agents.policies import transformer

sys.modules[__name__] = transformer
