"""Stable-Baselines3 interop: a ``VecEnv`` over the native vector env and the transformer as an SB3 policy.

Importing this package registers the ``"TransformerPolicy"`` alias with ``PPO``, ``A2C`` and (when
sb3-contrib is installed) ``MaskablePPO``.
"""

from agents.sb3.policy import (
    TransformerActorCriticPolicy,
    TransformerFeaturesExtractor,
    register_policy_aliases,
)
from agents.sb3.vec_env import SB3VecEnv

__all__ = [
    "SB3VecEnv",
    "TransformerActorCriticPolicy",
    "TransformerFeaturesExtractor",
    "register_policy_aliases",
]

try:  # needs sb3-contrib (an optional dependency); the redundant alias marks a re-export
    from agents.sb3.policy import MaskableTransformerActorCriticPolicy as MaskableTransformerActorCriticPolicy

    __all__.append("MaskableTransformerActorCriticPolicy")
except ImportError:  # pragma: no cover - sb3-contrib is installed in development and CI
    pass

register_policy_aliases()
