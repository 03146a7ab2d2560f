from __future__ import annotations

import math

import pytest

from medbench.budgets import format_budget, format_budgets, parse_budget, parse_budget_list
from medbench.errors import UsageError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8/255", 8 / 255),
        ("0.0314", 0.0314),
        ("0", 0.0),
        (" 4 / 255 ", 4 / 255),
        ("20", 20.0),
        (0.5, 0.5),
        (3, 3.0),
    ],
)
def test_parse_budget_accepts_numbers_and_fractions(text: str, expected: float) -> None:
    assert math.isclose(parse_budget(text), expected)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("8/0", "division by zero"),
        ("-1", ">= 0"),
        ("abc", "expected a number"),
        ("nan", "finite"),
        ("inf", "finite"),
        ("1/-255", ">= 0"),
        ("", "expected a number"),
        (True, "malformed"),
    ],
)
def test_parse_budget_rejects_malformed_input(text: str, fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment):
        parse_budget(text)


def test_budget_lists_keep_order_and_reject_empty_entries() -> None:
    assert parse_budget_list("2/255,8/255") == [2 / 255, 8 / 255]
    assert parse_budget_list(["1/255", "4/255,8/255"]) == [1 / 255, 4 / 255, 8 / 255]
    with pytest.raises(UsageError, match="empty entry"):
        parse_budget_list("2/255,,8/255")


def test_format_budget_round_trips_fractions() -> None:
    assert format_budget(8 / 255) == "8/255"
    assert format_budget(20.0) == "20"
    assert format_budget(0.0314) == "0.0314"
    assert format_budgets([2 / 255, 8 / 255]) == "2/255,8/255"
    for value in (1 / 255, 3 / 255, 16 / 255):
        assert math.isclose(parse_budget(format_budget(value)), value)
