"""DeepFool (Moosavi-Dezfooli et al., 2016) through ART's ``DeepFool``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from art.attacks.evasion import DeepFool as ARTDeepFool

from medbench.api import CLASSIFICATION, Attack
from medbench_art._art_bridge import run_art_attack
from medbench_art._classification import correctly_classified, project_l2, require_single_label


@dataclass(frozen=True)
class DeepFoolSettings:
    """DeepFool settings.

    Attributes:
        max_iter: Linearisation steps at most (50, as in the paper).
        nb_grads: Class gradients computed per step, for the classes with the highest
            scores (10).
        max_norm: None (default): unbounded, the achieved L2 is the cell's ``l2_mean``. A
            number projects every longer perturbation onto the L2 ball of that radius
            (as ``cw-l2``'s ``max_norm``).
    """

    max_iter: int = 50
    nb_grads: int = 10
    max_norm: float | None = None

    def validate(self) -> None:
        if self.max_iter < 1:
            raise ValueError("max_iter must be >= 1")
        if self.nb_grads < 1:
            raise ValueError("nb_grads must be >= 1")
        if self.max_norm is not None and self.max_norm < 0:
            raise ValueError("max_norm must be >= 0 (or none for the unbounded attack)")


class DeepFool(Attack):
    """Minimal-perturbation L2 DeepFool: steps to the nearest linearised decision boundary
    until the class changes, then overshoots the total perturbation by the budget η.

    Threat model ``l2-minimal`` (budget ``overshoot`` η, default 0.02 as in the paper): only
    the range is checked; the achieved L2 is the cell's ``l2_mean``. Only samples the model
    classifies correctly are attacked (ART's DeepFool would otherwise move a misclassified
    sample away from its wrong class, possibly to the right one). Deterministic;
    single-label classification only.
    """

    name = "deepfool"
    description = "DeepFool, minimal L2 perturbation (budget: overshoot η; ART DeepFool)"
    threat_model = "l2-minimal"
    tasks = CLASSIFICATION
    budget_name = "overshoot"
    default_budgets = (0.02,)
    budget_on_intensity_scale = False
    Settings = DeepFoolSettings

    def generate(
        self, estimator: Any, x: torch.Tensor, y: torch.Tensor, budget: float, *, seed: int
    ) -> torch.Tensor:
        require_single_label(self.name, estimator, y)
        settings: DeepFoolSettings = self.settings
        x_adv = x.detach().clone()
        correct = correctly_classified(estimator, x, y)
        if bool(correct.any()):
            attack = ARTDeepFool(
                estimator,
                max_iter=settings.max_iter,
                epsilon=budget,
                nb_grads=settings.nb_grads,
                batch_size=max(int(correct.sum()), 1),
                verbose=False,
            )
            x_adv[correct] = run_art_attack(attack, x[correct], y[correct], seed)
        if settings.max_norm is not None:
            x_adv = project_l2(x, x_adv, settings.max_norm)
        return x_adv
