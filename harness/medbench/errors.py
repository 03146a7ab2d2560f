"""Errors that the CLI turns into exit codes.

``UsageError`` and its subclasses mean bad usage or bad input: one line on stderr,
exit code 2, nothing recorded as a success. ``CellError`` is a failure inside one
cell of a matrix: the cell is marked FAILED and the matrix goes on.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MedbenchError(Exception):
    """Base class of every error medbench raises on purpose."""


class UsageError(MedbenchError):
    """Bad usage or bad input (exit code 2)."""


class UnknownNameError(UsageError):
    """A name that no plugin registered; the message carries a did-you-mean."""

    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        self.kind = kind
        self.name = name
        self.known = sorted(known)
        super().__init__(unknown_name_message(kind, name, self.known))


class DuplicateNameError(UsageError):
    """Two plugins registered the same name."""


class PluginLoadError(UsageError):
    """A plugin failed to load while ``--strict-plugins`` was set."""


class CellError(MedbenchError):
    """A failure inside one cell (or one defended model) of a matrix."""


def equally_close(name: str, known: Iterable[str]) -> list[str]:
    """The known names closest to ``name`` when several are equally close (``phantom`` →
    ``phantom2d``, ``phantom3d``), else the closest one; empty when nothing is close."""
    candidates = difflib.get_close_matches(name, list(known), n=5, cutoff=0.5)
    if not candidates:
        return []

    def ratio(candidate: str) -> float:
        return difflib.SequenceMatcher(None, name, candidate).ratio()

    best = ratio(candidates[0])
    return sorted(c for c in candidates if ratio(c) == best)


def unknown_name_message(kind: str, name: str, known: Iterable[str]) -> str:
    """Format ``unknown <kind> 'name'`` with a did-you-mean or the list of known names."""
    known = sorted(known)
    message = f"unknown {kind} {name!r}"
    suggestions = equally_close(name, known)
    if suggestions:
        return f"{message}; did you mean {' or '.join(map(repr, suggestions))}?"
    if known:
        return f"{message}; known: {', '.join(known)}"
    return f"{message}; none is registered"
