"""What APGD-CE and APGD-DLR share: ART's ``AutoProjectedGradientDescent`` under L∞."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from art.attacks.evasion import AutoProjectedGradientDescent

from medbench.api import CLASSIFICATION
from medbench_art._art_bridge import ARTEvasionAttack
from medbench_art._classification import require_single_label


@dataclass(frozen=True)
class APGDSettings:
    """APGD settings (Croce & Hein, 2020).

    Attributes:
        max_iter: Iterations per restart (100, as in AutoAttack).
        restarts: Runs from independent random starts in the ε-ball; later runs attack only
            the samples still classified correctly (1, as in AutoAttack's standard version).
        step_ratio: Initial step size as a fraction of ε (2, i.e. 2ε, Croce & Hein's choice);
            APGD halves it on its own when progress stalls.
    """

    max_iter: int = 100
    restarts: int = 1
    step_ratio: float = 2.0

    def validate(self) -> None:
        if self.max_iter < 1:
            raise ValueError("max_iter must be >= 1")
        if self.restarts < 1:
            raise ValueError("restarts must be >= 1 (APGD starts at a random point of the ball)")
        if self.step_ratio <= 0:
            raise ValueError("step_ratio must be > 0")


class APGD(ARTEvasionAttack):
    """Untargeted L∞ APGD on a fixed loss; subclasses set :attr:`loss_type`."""

    loss_type: ClassVar[str]
    """ART's ``loss_type``: ``cross_entropy`` or ``difference_logits_ratio``."""
    threat_model = "linf"
    tasks = CLASSIFICATION
    budget_name = "eps"
    default_budgets = (1 / 255, 2 / 255, 4 / 255, 8 / 255)
    Settings = APGDSettings

    def check(self, estimator: Any, y: torch.Tensor) -> None:
        """Refuse data this loss cannot attack (raises :class:`~medbench.api.toolkit.CellError`)."""
        require_single_label(self.name, estimator, y)

    def generate(
        self, estimator: Any, x: torch.Tensor, y: torch.Tensor, budget: float, *, seed: int
    ) -> torch.Tensor:
        self.check(estimator, y)
        return super().generate(estimator, x, y, budget, seed=seed)

    def make(self, estimator: Any, budget: float, batch_size: int) -> Any:
        settings: APGDSettings = self.settings
        return AutoProjectedGradientDescent(
            estimator,
            norm=np.inf,
            eps=budget,
            eps_step=settings.step_ratio * budget,
            max_iter=settings.max_iter,
            targeted=False,
            nb_random_init=settings.restarts,
            batch_size=batch_size,
            loss_type=self.loss_type,
            verbose=False,
        )
