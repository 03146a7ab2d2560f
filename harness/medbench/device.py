"""Choosing the torch device: ``auto`` takes the GPU when there is one."""

from __future__ import annotations

import torch

from medbench.errors import UsageError


def resolve_device(name: str = "auto") -> torch.device:
    """Turn ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` into a device.

    Raises:
        UsageError: CUDA was asked for and is not available, or the name is malformed.
    """
    name = name.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} asked for, but CUDA is not available on this machine")
    if device.type not in {"cpu", "cuda"}:
        raise UsageError(f"unsupported device {name!r}: use auto, cpu, cuda or cuda:N")
    return device
