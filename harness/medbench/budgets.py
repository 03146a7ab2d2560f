"""Parsing and formatting of attack budgets (``8/255``, ``0.0314``, ``2/255,8/255``)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from fractions import Fraction

from medbench.errors import UsageError

_FORMAT_DENOMINATORS = (255, 1000)


def parse_budget(text: str | float | int) -> float:
    """Parse one budget value.

    Accepts a number (``0.0314``, ``20``) or a fraction (``8/255``). Raises
    :class:`UsageError` for anything that is not a finite, non-negative number.
    """
    if isinstance(text, bool):
        raise UsageError(f"malformed budget {text!r}: expected a number such as 8/255 or 0.03")
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        raw = str(text).strip()
        try:
            if "/" in raw:
                numerator, denominator = (part.strip() for part in raw.split("/", 1))
                den = float(denominator)
                if den == 0:
                    raise UsageError(f"malformed budget {raw!r}: division by zero")
                value = float(numerator) / den
            else:
                value = float(raw)
        except ValueError:
            raise UsageError(f"malformed budget {raw!r}: expected a number such as 8/255 or 0.03") from None
    if not math.isfinite(value):
        raise UsageError(f"malformed budget {text!r}: must be finite")
    if value < 0:
        raise UsageError(f"malformed budget {text!r}: must be >= 0")
    return value


def parse_budget_list(items: str | float | int | Iterable[str | float | int]) -> list[float]:
    """Parse a comma-separated list (or a sequence of such lists) of budgets, keeping order."""
    if isinstance(items, (str, int, float)):
        items = [items]
    values: list[float] = []
    for item in items:
        parts = str(item).split(",") if isinstance(item, str) else [item]
        for part in parts:
            if isinstance(part, str) and not part.strip():
                raise UsageError(f"malformed budget list {item!r}: empty entry")
            values.append(parse_budget(part))
    if not values:
        raise UsageError("empty budget list")
    return values


def format_budget(value: float) -> str:
    """Format a budget readably: ``8/255`` when it is one, else a short decimal."""
    for denominator in _FORMAT_DENOMINATORS:
        numerator = value * denominator
        if value > 0 and abs(numerator - round(numerator)) < 1e-6 and round(numerator) != 0:
            fraction = Fraction(round(numerator), denominator)
            if fraction.denominator == 1:
                return str(fraction.numerator)
            return f"{round(numerator)}/{denominator}"
    return f"{value:.6g}"


def format_budgets(values: Sequence[float]) -> str:
    """Format a list of budgets as ``2/255,8/255``."""
    return ",".join(format_budget(value) for value in values)
