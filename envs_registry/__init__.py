"""The environment ids of lmrl-gym: one table of specs and the function that registers them.

Entry points are strings, so importing this module (and registering) imports neither torch nor the
environment code; ``gym.make`` imports ``lmrl_gym`` only when an environment is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

ENTRY_POINT = "lmrl_gym.env:TextGenEnv"
VECTOR_ENTRY_POINT = "lmrl_gym.vector_env:TextGenVectorEnv"


@dataclass(frozen=True)
class TextGenSpec:
    """One registered id: the task and reward it defaults to (every argument can be overridden)."""

    id: str
    task: str
    reward: str = "bleu"
    extra: dict[str, Any] = field(default_factory=dict)
    summary: str = ""

    @property
    def kwargs(self) -> dict[str, Any]:
        return {"task": self.task, "reward": self.reward, **self.extra}


ENV_SPECS: tuple[TextGenSpec, ...] = (
    TextGenSpec("TextGen-v0", "numbers", summary="the default: English number words to French, BLEU reward"),
    TextGenSpec("TextGen-Copy-v0", "copy", summary="repeat the prompt's symbols"),
    TextGenSpec("TextGen-Reverse-v0", "reverse", summary="write the prompt's symbols backwards"),
    TextGenSpec("TextGen-Sort-v0", "sort", summary="write the prompt's symbols in sorted order"),
    TextGenSpec("TextGen-Addition-v0", "addition", summary="add two numbers written digit by digit"),
    TextGenSpec("TextGen-SCAN-v0", "scan", summary="SCAN commands to action sequences (Lake & Baroni 2018)"),
    TextGenSpec("TextGen-Numbers-v0", "numbers", summary="English number words to French number words"),
    TextGenSpec(
        "TextGen-Oracle-v0", "oracle", reward="lm", summary="a hidden n-gram language; LM-score reward"
    ),
)


def registered_ids() -> list[str]:
    return [spec.id for spec in ENV_SPECS]


def register_envs() -> None:
    """Register every id in :data:`ENV_SPECS` with Gymnasium (idempotent)."""
    for spec in ENV_SPECS:
        if spec.id in gym.registry:
            continue
        gym.register(
            id=spec.id,
            entry_point=ENTRY_POINT,
            vector_entry_point=VECTOR_ENTRY_POINT,
            kwargs=spec.kwargs,
        )
