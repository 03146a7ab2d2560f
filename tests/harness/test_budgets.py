from __future__ import annotations

import math

import pytest

from medbench.config.budgets import (
    UnitBudget,
    format_budget,
    format_budgets,
    parse_budget,
    parse_budget_list,
    parse_budget_or_unit,
    to_intensity_scale,
)
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


def test_unit_budgets_parse_and_convert_through_the_window() -> None:
    assert parse_budget_list("5HU, 10 hu,2/255") == [UnitBudget(5.0, "HU"), UnitBudget(10.0, "hu"), 2 / 255]
    assert parse_budget_or_unit("2.5HU").text == "2.5HU"
    assert parse_budget_or_unit("1e1HU") == UnitBudget(10.0, "HU")
    # the Synapse window of paper 003: -175..250 HU is [0, 1], so 5 HU is 5/425 = 3/255
    assert to_intensity_scale(UnitBudget(5.0, "hu"), (-175.0, 250.0), "HU", "ct") == pytest.approx(5 / 425)
    assert to_intensity_scale(8 / 255, None, "", "phantom2d") == 8 / 255
    with pytest.raises(UsageError, match="declares no intensity window"):
        to_intensity_scale(UnitBudget(5.0, "HU"), None, "", "phantom2d")
    with pytest.raises(UsageError, match="window in HU, not mm"):
        to_intensity_scale(UnitBudget(5.0, "mm"), (-175.0, 250.0), "HU", "ct")
    for malformed in ("-5HU", "HU", "5 H U", "nanHU"):
        with pytest.raises(UsageError):
            parse_budget_or_unit(malformed)
