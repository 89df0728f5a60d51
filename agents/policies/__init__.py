"""Policies: the :class:`Policy` protocol (``base``), our own transformer behind it (``transformer``), any
``transformers`` model behind it (``hf``, imported on first use so that ``transformers`` is too), and the
kinds that say which class wrote a checkpoint (``registry``)."""

from typing import Any

from agents.policies.base import DecodingState, Policy, SequenceScores, check_policy, env_setup_of
from agents.policies.registry import (
    POLICY_KINDS,
    load_policy,
    policy_kind_of,
    register_policy_kind,
)
from agents.policies.transformer import TransformerPolicy

__all__ = [
    "POLICY_KINDS",
    "DecodingState",
    "Policy",
    "SequenceScores",
    "TransformerPolicy",
    "check_policy",
    "env_setup_of",
    "load_policy",
    "policy_kind_of",
    "register_policy_kind",
]


def __getattr__(name: str) -> Any:
    # HFPolicy imports transformers: only when asked for.
    if name == "HFPolicy":
        from agents.policies.hf import HFPolicy

        return HFPolicy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
