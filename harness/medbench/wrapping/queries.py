"""Counting the model queries of black-box attacks.

Score-based (Square) and decision-based (HopSkipJump) attacks see the model only through
``estimator.predict``; every row they pass is one query. :func:`counting_queries` counts
those rows while an attack runs, without changing the estimator's type (ART attacks check it).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass
class QueryCount:
    """Rows passed to ``estimator.predict`` so far."""

    queries: int = 0


@contextmanager
def counting_queries(estimator: Any) -> Iterator[QueryCount]:
    """Count the samples ``estimator.predict`` is asked for inside the ``with`` block.

    Example:
        >>> with counting_queries(estimator) as count:
        ...     x_adv = attack.generate(x)
        >>> count.queries
    """
    count = QueryCount()
    shadowed = "predict" in vars(estimator)
    previous = vars(estimator).get("predict")
    original = estimator.predict

    def predict(x: Any, *args: Any, **kwargs: Any) -> Any:
        count.queries += len(x)
        return original(x, *args, **kwargs)

    estimator.predict = predict
    try:
        yield count
    finally:
        if shadowed:
            estimator.predict = previous
        else:
            del estimator.predict
