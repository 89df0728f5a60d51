"""Offline RL from a data set of trajectories: filtered behaviour cloning and ILQL.

Both learn from references, saved rollouts of any policy or a JSON Lines file of (prompt, text, reward)
(:mod:`agents.algorithms.offline.dataset`), with the SB3 surface of the online algorithms; ``learn`` counts
gradient steps.
"""

from agents.algorithms.offline.base import OfflineAlgorithm
from agents.algorithms.offline.dataset import check_dataset, resolve_dataset
from agents.algorithms.offline.filtered_bc import FilteredBC, top_fraction
from agents.algorithms.offline.ilql import (
    ILQL,
    ILQLHeads,
    ILQLPolicy,
    cql_loss,
    expectile_loss,
    polyak_update,
    td_targets,
)

__all__ = [
    "ILQL",
    "FilteredBC",
    "ILQLHeads",
    "ILQLPolicy",
    "OfflineAlgorithm",
    "check_dataset",
    "cql_loss",
    "expectile_loss",
    "polyak_update",
    "resolve_dataset",
    "td_targets",
    "top_fraction",
]
