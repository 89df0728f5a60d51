"""Policy-gradient algorithms with Stable-Baselines3's surface."""

from agents.algorithms.a2c import A2C
from agents.algorithms.base import KLController, TextRLAlgorithm
from agents.algorithms.grpo import GRPO
from agents.algorithms.nlpo import NLPO
from agents.algorithms.offline import ILQL, FilteredBC
from agents.algorithms.offline.base import OfflineAlgorithm
from agents.algorithms.ppo import PPO
from agents.algorithms.reinforce import REINFORCE
from agents.algorithms.rloo import RLOO

ALGORITHMS = {
    "reinforce": REINFORCE,
    "a2c": A2C,
    "ppo": PPO,
    "grpo": GRPO,
    "rloo": RLOO,
    "nlpo": NLPO,
    "filtered_bc": FilteredBC,
    "ilql": ILQL,
}
# Names of the algorithms that learn from a fixed data set (``learn`` counts gradient steps; no env steps,
# no KL leash) and of those that act in the env.
OFFLINE_ALGORITHMS = tuple(name for name, cls in ALGORITHMS.items() if issubclass(cls, OfflineAlgorithm))
ONLINE_ALGORITHMS = tuple(name for name in ALGORITHMS if name not in OFFLINE_ALGORITHMS)

__all__ = [
    "A2C",
    "ALGORITHMS",
    "FilteredBC",
    "GRPO",
    "ILQL",
    "KLController",
    "NLPO",
    "OFFLINE_ALGORITHMS",
    "ONLINE_ALGORITHMS",
    "PPO",
    "REINFORCE",
    "RLOO",
    "TextRLAlgorithm",
]
