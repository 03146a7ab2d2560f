"""BIM / I-FGSM (Kurakin et al., 2017): ART's ``BasicIterativeMethod`` steps, taken in torch."""

from __future__ import annotations

from medbench.api import ALL_TASKS
from medbench_art._iterative import IterativeSettings
from medbench_art.linf_iterative import LinfIterativeAttack, Schedule


class BIM(LinfIterativeAttack):
    """Iterated FGSM without random start, projected onto the ε-ball and [0, 1] after each step.

    Defaults: 10 iterations of step ε/10 (``step_ratio=0.1``), so the last step can reach
    the boundary of the ball.
    """

    name = "bim"
    description = "Basic Iterative Method / I-FGSM, 10 L∞ steps of ε/10, no random start (ART, in torch)"
    threat_model = "linf"
    tasks = ALL_TASKS
    budget_name = "eps"
    default_budgets = (1 / 255, 2 / 255, 4 / 255, 8 / 255)
    Settings = IterativeSettings

    def schedule(self, budget: float) -> Schedule:
        settings: IterativeSettings = self.settings
        return Schedule(settings.step(budget), settings.max_iter, random_starts=0)
