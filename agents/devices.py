"""Choosing the torch device: ``"auto"`` means CUDA when present, else CPU."""

from __future__ import annotations

import functools

import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> ``cuda`` if available else ``cpu``; anything else is passed to ``torch.device``."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from err


@functools.cache
def cpu_has_bf16_units() -> bool:
    """Whether this CPU computes bfloat16 natively (AMX tiles or AVX-512 BF16, from ``/proc/cpuinfo``'s
    flags): there bf16 matrix products run at up to several times the fp32 rate; elsewhere torch emulates
    them, slower than fp32."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"amx_bf16", "avx512_bf16"})
    except OSError:
        pass
    return False


def bf16_autocast_applies(device: torch.device) -> bool:
    """Where a policy's ``bf16_autocast=True`` takes effect: on CUDA, and on CPUs with bf16 units."""
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16_units())
