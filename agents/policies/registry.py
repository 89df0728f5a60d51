"""Policy kinds: which class wrote a checkpoint, so that whoever stores a policy inside its own checkpoint
(an algorithm's zip, the best policy of :class:`~agents.callbacks.TextEvalCallback`) can read it back
without knowing the class.

A kind names a class by a ``"module:ClassName"`` string, so that reading a table entry imports nothing:
``import agents`` stays free of ``transformers`` until an ``"hf"`` checkpoint is actually loaded. A kind
also says what the class's ``save(path)`` writes at ``path``: the file name (``"policy.pt"``) or the folder
name (``"policy"``) a container gives it.

A user's own policy class takes part with one call::

    register_policy_kind("mine", "my_package.policy:MyPolicy", checkpoint_name="policy.pt")
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class PolicyKind:
    """A registered policy class: ``entry_point`` ``"module:ClassName"``; ``checkpoint_name`` the name its
    ``save`` is given inside a container (a file name for a file checkpoint, a folder name for a folder)."""

    name: str
    entry_point: str
    checkpoint_name: str

    def load_class(self) -> type:
        module, _, qualname = self.entry_point.partition(":")
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        return obj


POLICY_KINDS: dict[str, PolicyKind] = {}


def register_policy_kind(name: str, entry_point: str, checkpoint_name: str) -> None:
    """Register (or replace) the policy kind ``name``: the class at ``entry_point`` (``"module:Class"``)
    whose ``save(path)`` writes ``checkpoint_name`` (``"x.pt"`` for a file, ``"x"`` for a folder)."""
    if ":" not in entry_point:
        raise ValueError(f"entry_point must be 'module:ClassName', got {entry_point!r}")
    POLICY_KINDS[name] = PolicyKind(name, entry_point, checkpoint_name)


register_policy_kind("transformer", "agents.policies.transformer:TransformerPolicy", "policy.pt")
register_policy_kind("hf", "agents.policies.hf:HFPolicy", "policy")
# ILQL's acting policy: a base policy's checkpoint and the Q / V heads, in one folder.
register_policy_kind("ilql", "agents.algorithms.offline.ilql:ILQLPolicy", "policy")


def policy_kind_of(policy: Any) -> PolicyKind:
    """The registered kind of ``policy``'s class (or of the nearest registered base class).

    Matched by the class's ``module:qualname``, so no registered module is imported to answer.

    :raises ValueError: for a class no kind names; the message says how to register one.
    """
    by_entry_point = {kind.entry_point: kind for kind in POLICY_KINDS.values()}
    for cls in type(policy).__mro__:
        kind = by_entry_point.get(f"{cls.__module__}:{cls.__qualname__}")
        if kind is not None:
            return kind
    raise ValueError(
        f"{type(policy).__name__} is not a registered policy kind, so a checkpoint could not say how to read "
        "it back; register it with agents.policies.register_policy_kind(name, 'module:ClassName', "
        "checkpoint_name)"
    )


def load_policy(
    kind: str, path: str | os.PathLike, env: Any = None, device: str | torch.device = "auto"
) -> Any:
    """``load(path, env, device)`` of the class registered as ``kind``."""
    if kind not in POLICY_KINDS:
        raise ValueError(f"unknown policy kind {kind!r}; registered: {sorted(POLICY_KINDS)}")
    return POLICY_KINDS[kind].load_class().load(path, env=env, device=device)
