"""The machine a benchmark ran on, in one line: every benchmark prints it, since only figures measured on
one named machine (and ratios measured in one run) can be compared."""

from __future__ import annotations

import os
import platform

import torch


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, ``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def describe_machine(device: torch.device | str = "cpu") -> str:
    """E.g. ``"CPU: AMD EPYC 7B13 (2 cores, torch 2.13.0 with 1 thread); device cpu"``; on CUDA the GPU's
    name too."""
    text = (
        f"CPU: {cpu_model()} ({os.cpu_count()} cores, torch {torch.__version__} with "
        f"{torch.get_num_threads()} thread{'s' if torch.get_num_threads() != 1 else ''})"
    )
    device = torch.device(device)
    if device.type == "cuda":
        text += f"; GPU: {torch.cuda.get_device_name(device)}"
    return f"{text}; device {device}"
