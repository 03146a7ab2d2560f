"""BIM / I-FGSM (Kurakin et al., 2017) through ART's ``BasicIterativeMethod``."""

from __future__ import annotations

from typing import Any

from art.attacks.evasion import BasicIterativeMethod

from medbench.api import ALL_TASKS
from medbench_art._art_bridge import ARTEvasionAttack
from medbench_art._iterative import IterativeSettings


class BIM(ARTEvasionAttack):
    """Iterated FGSM without random start, projected onto the ε-ball and [0, 1] after each step.

    Defaults: 10 iterations of step ε/10 (``step_ratio=0.1``), so the last step can reach
    the boundary of the ball.
    """

    name = "bim"
    description = "Basic Iterative Method / I-FGSM, 10 L∞ steps of ε/10, no random start (ART)"
    threat_model = "linf"
    tasks = ALL_TASKS
    budget_name = "eps"
    default_budgets = (1 / 255, 2 / 255, 4 / 255, 8 / 255)
    Settings = IterativeSettings

    def make(self, estimator: Any, budget: float, batch_size: int) -> Any:
        settings: IterativeSettings = self.settings
        return BasicIterativeMethod(
            estimator,
            eps=budget,
            eps_step=settings.step(budget),
            max_iter=settings.max_iter,
            batch_size=batch_size,
            verbose=False,
        )
