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


def make_deterministic() -> None:
    """Ask torch for deterministic kernels (``--deterministic``).

    cuDNN picks deterministic algorithms and stops benchmarking them, cuBLAS gets the
    workspace setting it needs for reproducible matrix products, and operations without a
    deterministic implementation warn instead of failing. CPU runs are deterministic without
    this; on a GPU it makes repeated runs identical at some cost in speed.
    """
    import os

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)
