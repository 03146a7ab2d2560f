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


def first_line(error: BaseException, *, with_type: bool = True) -> str:
    """The first non-empty line of an error's message, for one-line reports.

    Args:
        error: Any exception.
        with_type: Prefix the exception's type (``ValueError: ...``), except for medbench's
            own errors, whose messages are written to be read as they are.

    Returns:
        ``Type: first line``, the first line alone, or the type's name for an empty message.
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    first = lines[0] if lines else ""
    if not first:
        return type(error).__name__
    if not with_type or isinstance(error, MedbenchError):
        return first
    return f"{type(error).__name__}: {first}"
