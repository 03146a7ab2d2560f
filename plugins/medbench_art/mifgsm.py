"""MI-FGSM (Dong et al., 2018): ART's ``MomentumIterativeMethod`` steps, taken in torch."""

from __future__ import annotations

from dataclasses import dataclass

from medbench.api import ALL_TASKS
from medbench_art._iterative import IterativeSettings
from medbench_art.linf_iterative import LinfIterativeAttack, Schedule


@dataclass(frozen=True)
class MIFGSMSettings(IterativeSettings):
    """MI-FGSM settings.

    Attributes:
        max_iter: Gradient steps (10, as in Dong et al.).
        step_ratio: Step size as a fraction of ε (ε/10, Dong et al.'s α = ε/T).
        decay: Momentum decay μ (1.0 in Dong et al.); the gradient is L1-normalised per sample.
    """

    decay: float = 1.0

    def validate(self) -> None:
        super().validate()
        if self.decay < 0:
            raise ValueError("decay must be >= 0")


class MIFGSM(LinfIterativeAttack):
    """Momentum iterative FGSM, L∞: ``g ← μ·g + ∇/‖∇‖₁``, step ``α·sign(g)``, no random start."""

    name = "mifgsm"
    description = "Momentum Iterative FGSM, L∞, 10 steps of ε/10, decay 1.0 (ART, in torch)"
    threat_model = "linf"
    tasks = ALL_TASKS
    budget_name = "eps"
    default_budgets = (1 / 255, 2 / 255, 4 / 255, 8 / 255)
    Settings = MIFGSMSettings

    def schedule(self, budget: float) -> Schedule:
        settings: MIFGSMSettings = self.settings
        return Schedule(settings.step(budget), settings.max_iter, random_starts=0, decay=settings.decay)
