"""medbench: adversarial robustness benchmarks for medical-imaging models.

Plugin authors import :data:`hookimpl` to mark their hook implementations and the
base classes in :mod:`medbench.api` to describe their attacks, defenses, datasets
and models.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import pluggy

PROJECT_NAME = "medbench"
"""The pluggy project name and the entry-point group plugins register under."""

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
"""Decorator that marks a function as the implementation of a medbench hook."""

try:
    __version__ = version("medbench")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["PROJECT_NAME", "__version__", "hookimpl"]
