"""medbench: adversarial robustness benchmarks for medical-imaging models.

From Python, :func:`evaluate` attacks a model you already have, :func:`run` runs a suite or
spec, and :func:`load_results` reads finished runs back from MLflow; each returns a
:class:`Results`. Plugin authors import :data:`hookimpl` to mark their hook implementations,
the base classes in :mod:`medbench.api` and the helpers in :mod:`medbench.api.toolkit`.

The engine is imported on first use, so that ``import medbench`` (and a plugin's
``from medbench import hookimpl``) stays light.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

import pluggy

from medbench.errors import MedbenchError, UsageError

if TYPE_CHECKING:
    from medbench.python_api import evaluate, run
    from medbench.results import Results, load_results

PROJECT_NAME = "medbench"
"""The pluggy project name and the entry-point group plugins register under."""

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
"""Decorator that marks a function as the implementation of a medbench hook."""

try:
    __version__ = version("medbench")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

_LAZY = {
    "evaluate": "medbench.python_api",
    "run": "medbench.python_api",
    "Results": "medbench.results",
    "load_results": "medbench.results",
}


def __getattr__(name: str) -> Any:
    """The Python API's names, imported on first use."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'medbench' has no attribute {name!r}")


__all__ = [
    "PROJECT_NAME",
    "MedbenchError",
    "Results",
    "UsageError",
    "__version__",
    "evaluate",
    "hookimpl",
    "load_results",
    "run",
]
