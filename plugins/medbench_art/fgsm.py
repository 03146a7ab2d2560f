"""FGSM (Goodfellow et al., 2015) through ART's ``FastGradientMethod``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from art.attacks.evasion import FastGradientMethod

from medbench.api import ALL_TASKS
from medbench_art._art_bridge import ARTEvasionAttack


class FGSM(ARTEvasionAttack):
    """One signed-gradient step of size ε: ``clip(x + ε·sign(∇ₓ CE), 0, 1)``."""

    name = "fgsm"
    description = "Fast Gradient Sign Method, one L∞ step of size ε (ART FastGradientMethod)"
    threat_model = "linf"
    tasks = ALL_TASKS
    budget_name = "eps"
    default_budgets = (1 / 255, 2 / 255, 4 / 255, 8 / 255)

    @dataclass(frozen=True)
    class Settings:
        """FGSM has no tunable parameter besides the budget."""

    def make(self, estimator: Any, budget: float, batch_size: int) -> Any:
        return FastGradientMethod(
            estimator, norm=float("inf"), eps=budget, eps_step=budget, batch_size=batch_size
        )
