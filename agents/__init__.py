"""The lmrl-gym agent library: a transformer policy, MLE pretraining, decoding, evaluation,
REINFORCE / A2C / PPO with a KL leash, and inverse RL (:class:`IRL`) that learns a reward from
demonstrations. Stable-Baselines3 interop is in :mod:`agents.sb3`.
"""

# ruff: noqa: E402  (the check below must run before the submodules are imported)
# First, before any submodule: the OpenAI Agents SDK installs a top-level ``agents`` too, and with both in
# one environment a submodule may be the other's file; this names the cause instead of a confusing error.
from agents.package_clash import check_package_clash

check_package_clash()

from agents.algorithms import A2C, PPO, REINFORCE
from agents.evaluation import evaluate, format_evaluation
from agents.generate import decode
from agents.irl import IRL
from agents.models import TransformerConfig, TransformerLM
from agents.policy import TransformerPolicy
from agents.pretrain import pretrain

__all__ = [
    "A2C",
    "IRL",
    "PPO",
    "REINFORCE",
    "TransformerConfig",
    "TransformerLM",
    "TransformerPolicy",
    "decode",
    "evaluate",
    "format_evaluation",
    "pretrain",
]
