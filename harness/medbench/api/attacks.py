"""Attack and metric plugins, and what they return or receive."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch

from medbench.api.plugin import CLASSIFICATION, Plugin, Task, ThreatModel

if TYPE_CHECKING:
    from art.estimators.estimator import BaseEstimator


class Attack(Plugin, ABC):
    """An attack plugin: crafts adversarial inputs against an ART estimator.

    Subclasses declare their threat model and budget and implement :meth:`generate`.
    """

    budget_name: ClassVar[str] = "eps"
    """Name of the budget parameter: ``eps``, ``sigma``, ``q_max``..."""
    budget_on_intensity_scale: ClassVar[bool] = True
    """True when the budget is on the [0, 1] intensity scale (``--eps`` then applies)."""
    tasks: ClassVar[frozenset[str]] = CLASSIFICATION

    @property
    def kind_label(self) -> str:
        return "attack"

    @property
    def threat_model(self) -> ThreatModel:
        """What the budget bounds; ``linf`` unless a subclass says otherwise.

        Subclasses set it as a class attribute (``threat_model = "l2"``), or override the
        property where it follows a setting (``hsj``'s ``norm``).
        """
        return "linf"

    @property
    def default_budgets(self) -> tuple[float, ...]:
        """The budgets run when none are given (4/255 and 8/255 unless a subclass says otherwise).

        A class attribute in subclasses, or a property where they follow a setting.
        """
        return (4 / 255, 8 / 255)

    @abstractmethod
    def generate(
        self, estimator: BaseEstimator, x: torch.Tensor, y: torch.Tensor, budget: float, *, seed: int
    ) -> torch.Tensor | AttackResult:
        """Craft adversarial examples for one batch.

        Args:
            estimator: The ART estimator around the defended model (``PyTorchClassifier``
                for classification); its ``device`` is where ``x`` lives.
            x: Clean inputs in [0, 1], on the estimator's device.
            y: True labels (class indices), on the same device.
            budget: The budget value on the scale of :attr:`budget_name`.
            seed: Seeds random starts and noise, so that a cell is reproducible.

        Returns:
            Adversarial inputs of the same shape and device, inside the budget and [0, 1];
            or an :class:`AttackResult` holding them and counts to log (queries).
        """

    def generate_budgets(
        self,
        estimator: BaseEstimator,
        x: torch.Tensor,
        y: torch.Tensor,
        budgets: Sequence[float],
        *,
        seeds: Sequence[int],
    ) -> list[torch.Tensor | AttackResult]:
        """Craft adversarial examples of one batch for several budgets at once.

        The harness calls this when a defended model is attacked at several budgets of one
        attack. The default calls :meth:`generate` once per budget; an attack whose budgets
        share work overrides it (FGSM computes its gradient once for every ε). Each element
        must be what :meth:`generate` returns for that budget and seed.

        Args:
            estimator: As for :meth:`generate`.
            x: As for :meth:`generate`.
            y: As for :meth:`generate`.
            budgets: The budget values.
            seeds: One seed per budget (each cell has its own).

        Returns:
            One result per budget, in the order of ``budgets``.
        """
        return [
            self.generate(estimator, x, y, budget, seed=seed)
            for budget, seed in zip(budgets, seeds, strict=True)
        ]


@dataclass
class AttackResult:
    """What :meth:`Attack.generate` may return instead of a bare tensor.

    Attributes:
        x_adv: The adversarial batch (same contract as a bare return value).
        totals: Counts summed over the batch's samples, e.g. ``{"queries": 5120.0}`` for
            the model queries a black-box attack made. The harness sums them over the
            batches of a cell and logs ``<name>_mean``, the total per attacked sample.
    """

    x_adv: torch.Tensor
    totals: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------- metrics


@dataclass
class CellOutputs:
    """What one cell produced, given to metric plugins. All tensors are on the CPU."""

    x_clean: torch.Tensor
    x_adv: torch.Tensor
    labels: torch.Tensor
    clean_logits: torch.Tensor
    adv_logits: torch.Tensor
    budget: float
    budget_name: str
    task: Task


class Metric(Plugin, ABC):
    """An extra metric computed for every cell and logged under :attr:`name`."""

    tasks: ClassVar[frozenset[str]] = CLASSIFICATION

    @property
    def kind_label(self) -> str:
        return "metric"

    @abstractmethod
    def compute(self, outputs: CellOutputs) -> float:
        """Return the metric's value for one cell (NaN when undefined)."""
