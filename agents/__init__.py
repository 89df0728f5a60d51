"""The lmrl-gym agent library: policies behind one protocol (:mod:`agents.policies`), MLE pretraining,
decoding, evaluation, REINFORCE / A2C / PPO with a KL leash, and inverse RL (:class:`IRL`) that learns a
reward from demonstrations. Stable-Baselines3 interop is in :mod:`agents.sb3`; the applications (command
line, demo, benchmarks) are in :mod:`agents.commands` and :mod:`agents.bench`.
"""

# ruff: noqa: E402  (the check below must run before the submodules are imported)
# First, before any submodule: the OpenAI Agents SDK installs a top-level ``agents`` too, and with both in
# one environment a submodule may be the other's file; this names the cause instead of a confusing error.
from agents.package_clash import check_package_clash

check_package_clash()

from agents.algorithms import A2C, GRPO, ILQL, NLPO, PPO, REINFORCE, RLOO, FilteredBC
from agents.evaluation import evaluate, format_evaluation
from agents.generate import decode
from agents.irl import IRL
from agents.models import TransformerConfig, TransformerLM
from agents.policies import Policy, TransformerPolicy, check_policy
from agents.pretrain import pretrain

__all__ = [
    "A2C",
    "GRPO",
    "ILQL",
    "IRL",
    "NLPO",
    "PPO",
    "RLOO",
    "FilteredBC",
    "Policy",
    "REINFORCE",
    "TransformerConfig",
    "TransformerLM",
    "TransformerPolicy",
    "check_policy",
    "decode",
    "evaluate",
    "format_evaluation",
    "pretrain",
]
