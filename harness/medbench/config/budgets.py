"""Parsing and formatting of attack budgets (``8/255``, ``0.0314``, ``2/255,8/255``, ``5HU``)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

from medbench.errors import UsageError

_FORMAT_DENOMINATORS = (255, 1000)


def parse_budget(text: str | float | int) -> float:
    """Parse one budget value.

    Accepts a number (``0.0314``, ``20``) or a fraction (``8/255``). Raises
    :class:`UsageError` for anything that is not a finite, non-negative number.
    """
    if isinstance(text, bool):
        raise UsageError(f"malformed budget {shown(text)}: expected a number such as 8/255 or 0.03")
    if isinstance(text, (int, float)):
        try:
            value = float(text)
        except OverflowError:  # an integer beyond the float range (10**400)
            value = math.inf
    else:
        raw = str(text).strip()
        try:
            if "/" in raw:
                numerator, denominator = (part.strip() for part in raw.split("/", 1))
                den = float(denominator)
                if den == 0:
                    raise UsageError(f"malformed budget {shown(raw)}: division by zero")
                value = float(numerator) / den
            else:
                value = float(raw)
        except OverflowError:
            value = math.inf
        except ValueError:
            raise UsageError(
                f"malformed budget {shown(raw)}: expected a number such as 8/255 or 0.03"
            ) from None
    if not math.isfinite(value):
        raise UsageError(f"malformed budget {shown(text)}: must be finite")
    if value < 0:
        raise UsageError(f"malformed budget {shown(text)}: must be >= 0")
    return value + 0.0  # -0.0 becomes 0.0


def shown(value: object, limit: int = 60) -> str:
    """``repr(value)``, shortened to about ``limit`` characters for a one-line error message."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-2:]}"


@dataclass(frozen=True)
class UnitBudget:
    """A budget in the data's own intensity unit (``5HU``), converted to the [0, 1] scale by
    :func:`to_intensity_scale` once the dataset and its intensity window are known."""

    value: float
    unit: str

    @property
    def text(self) -> str:
        """``5HU``: as the user wrote it (the number normalised)."""
        return f"{self.value:g}{self.unit}"


RequestedBudget = float | UnitBudget
"""A parsed budget as requested: on the [0, 1] scale, or in a unit awaiting the dataset's window."""


@dataclass(frozen=True)
class Budget:
    """One resolved budget of a cell.

    Attributes:
        value: The budget on the [0, 1] intensity scale (or the attack's own scale, e.g. ``q_max``).
        native: The budget as given in the data's intensity unit (``5HU``); None for budgets
            given on the [0, 1] scale.
    """

    value: float
    native: str | None = None

    @property
    def text(self) -> str:
        """How labels show it: ``5HU``, else ``8/255``."""
        return self.native or format_budget(self.value)

    @property
    def described(self) -> str:
        """``5HU (3/255)`` for a unit budget, else ``8/255``."""
        return f"{self.native} ({format_budget(self.value)})" if self.native else format_budget(self.value)


_WITH_UNIT = re.compile(r"^(?P<number>[0-9.eE+-]*[0-9.])\s*(?P<unit>[A-Za-z][A-Za-z0-9]*)$")
_EXPONENT = re.compile(r"[eE][0-9]+")
"""A "unit" that is the exponent of a plain number (``1e3``), not a unit."""


def parse_budget_or_unit(text: str | float | int) -> RequestedBudget:
    """Parse one budget that may carry an intensity unit: ``8/255``, ``0.03`` or ``5HU``.

    Raises:
        UsageError: For anything that is not a finite, non-negative number (with a unit).
    """
    if isinstance(text, str):
        match = _WITH_UNIT.match(text.strip())
        if match is not None and not _EXPONENT.fullmatch(match["unit"]):
            return UnitBudget(parse_budget(match["number"]), match["unit"])
    return parse_budget(text)


def parse_budget_list(items: str | float | int | Iterable[str | float | int]) -> list[RequestedBudget]:
    """Parse a comma-separated list (or a sequence of such lists) of budgets, keeping order.

    Entries are numbers, fractions or unit budgets (``2/255,8/255``; ``5HU,10HU``).

    Raises:
        UsageError: For anything but a number, a string or a list or tuple of them, and for
            any entry :func:`parse_budget_or_unit` refuses.
    """
    if isinstance(items, (str, int, float)):
        items = [items]
    elif not isinstance(items, (list, tuple)):
        # None, a date, a mapping or bytes from YAML: not a list of budgets
        raise UsageError(
            f"malformed budget list {shown(items)}: expected a number such as 8/255 or a list of them"
        )
    values: list[RequestedBudget] = []
    for item in items:
        parts = str(item).split(",") if isinstance(item, str) else [item]
        for part in parts:
            if isinstance(part, str) and not part.strip():
                raise UsageError(f"malformed budget list {shown(item)}: empty entry")
            values.append(parse_budget_or_unit(part))
    if not values:
        raise UsageError("empty budget list")
    return values


def to_intensity_scale(
    budget: RequestedBudget, window: tuple[float, float] | None, unit: str, dataset: str
) -> float:
    """The [0, 1]-scale value of a budget: ``value / (window high − window low)`` for a unit budget.

    Args:
        budget: A parsed budget.
        window: The dataset's intensity window (the values mapped to 0 and 1), if it has one.
        unit: The unit of ``window`` (``HU``); compared case-insensitively.
        dataset: The dataset's name, for the error message.

    Raises:
        UsageError: When the dataset declares no window, or one in another unit.
    """
    if not isinstance(budget, UnitBudget):
        return budget
    if window is None or not unit:
        raise UsageError(
            f"budget {budget.text}: dataset {dataset!r} declares no intensity window in physical units; "
            "give budgets on the [0, 1] scale (e.g. 8/255)"
        )
    if budget.unit.lower() != unit.lower():
        raise UsageError(
            f"budget {budget.text}: dataset {dataset!r} has its intensity window in {unit}, not {budget.unit}"
        )
    low, high = window
    return budget.value / (high - low)


def format_budget(value: float) -> str:
    """Format a budget readably: ``8/255`` when it is one, else a short decimal."""
    for denominator in _FORMAT_DENOMINATORS:
        numerator = value * denominator
        if not math.isfinite(numerator):  # 1e308 * 255 overflows
            break
        if value > 0 and abs(numerator - round(numerator)) < 1e-6 and round(numerator) != 0:
            fraction = Fraction(round(numerator), denominator)
            if fraction.denominator == 1:
                return str(fraction.numerator)
            return f"{round(numerator)}/{denominator}"
    return f"{value:.6g}"


def format_budgets(values: Sequence[float]) -> str:
    """Format a list of budgets as ``2/255,8/255``."""
    return ",".join(format_budget(value) for value in values)
