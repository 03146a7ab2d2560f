"""Square Attack (Andriushchenko et al., 2020) through ART's ``SquareAttack``: score-based black box."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from art.attacks.evasion import SquareAttack

from medbench.api import CLASSIFICATION, Attack, AttackResult
from medbench.api.toolkit import counting_queries
from medbench_art._art_bridge import run_art_attack
from medbench_art._classification import require_single_label


@dataclass(frozen=True)
class SquareSettings:
    """Square Attack settings.

    Attributes:
        max_iter: Iterations, i.e. the query budget per sample and restart: each iteration
            tries one random square update per sample still classified correctly (1000;
            AutoAttack's standard version uses 5000). ART also re-scores the current points at
            every iteration, so the logged ``queries_mean`` is up to 3·(max_iter + 1)·restarts.
        p_init: Initial fraction of pixels a square covers (0.8, AutoAttack's value for small
            images); it shrinks on a fixed schedule.
        restarts: Independent restarts for the samples still classified correctly (1).
    """

    max_iter: int = 1000
    p_init: float = 0.8
    restarts: int = 1

    def validate(self) -> None:
        if self.max_iter < 1:
            raise ValueError("max_iter must be >= 1")
        if not 0 < self.p_init <= 1:
            raise ValueError("p_init must be in (0, 1]")
        if self.restarts < 1:
            raise ValueError("restarts must be >= 1")


class Square(Attack):
    """L∞ Square Attack: random search over square-shaped ±2ε updates, kept when the margin
    ``z_y − max_{i≠y} z_i`` drops; sees the model only through its scores.

    Returns an :class:`~medbench.api.AttackResult` with the number of rows sent to
    ``estimator.predict`` (logged as ``queries_mean``, per sample). Needs 2D images
    ``(N, C, H, W)``; single-label classification only.
    """

    name = "square"
    description = "Square Attack, score-based black box, L∞, 1000 iterations; logs queries (ART SquareAttack)"
    threat_model = "linf"
    tasks = CLASSIFICATION
    budget_name = "eps"
    default_budgets = (4 / 255, 8 / 255)
    Settings = SquareSettings

    def generate(
        self, estimator: Any, x: torch.Tensor, y: torch.Tensor, budget: float, *, seed: int
    ) -> AttackResult:
        require_single_label(self.name, estimator, y)
        if budget == 0:
            return AttackResult(x.detach().clone(), {"queries": 0.0})
        settings: SquareSettings = self.settings
        attack = SquareAttack(
            estimator,
            norm=np.inf,
            max_iter=settings.max_iter,
            eps=budget,
            p_init=settings.p_init,
            nb_restarts=settings.restarts,
            batch_size=max(len(x), 1),
            verbose=False,
        )
        with counting_queries(estimator) as count:
            x_adv = run_art_attack(attack, x, y, seed)
        return AttackResult(x_adv, {"queries": float(count.queries)})
