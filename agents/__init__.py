"""The lmrl-gym agent library: a transformer policy, MLE pretraining, decoding and evaluation.

The RL algorithms (REINFORCE / A2C / PPO) and inverse RL land with their issues; Stable-Baselines3 interop
is in :mod:`agents.sb3`.
"""

from agents.evaluation import evaluate, format_evaluation
from agents.generate import decode
from agents.models import TransformerConfig, TransformerLM
from agents.policy import TransformerPolicy
from agents.pretrain import pretrain

__all__ = [
    "TransformerConfig",
    "TransformerLM",
    "TransformerPolicy",
    "decode",
    "evaluate",
    "format_evaluation",
    "pretrain",
]
