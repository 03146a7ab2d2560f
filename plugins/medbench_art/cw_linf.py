"""C&W L∞ (Carlini & Wagner, 2017) through ART's ``CarliniLInfMethod``, bounded by ε."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from art.attacks.evasion import CarliniLInfMethod
from art.config import ART_NUMPY_DTYPE
from art.utils import check_and_transform_label_format

from medbench.api import CLASSIFICATION
from medbench_art._art_bridge import ARTEvasionAttack
from medbench_art._classification import require_single_label


class BoundedCarliniLInf(CarliniLInfMethod):
    """ART's C&W L∞ with the penalty threshold τ fixed at ε, stopping at the first success.

    ART's ``generate`` searches the *minimal* L∞ perturbation: it starts at τ = 1 and shrinks
    τ by ``decrease_factor`` while it keeps succeeding. A bounded attack only needs success
    inside the ε-ball, so this subclass runs ART's own optimisation (``_generate_single``:
    Adam in tanh space on ``c·max(z_y − max_{i≠y} z_i + κ, 0) + Σ max(|δ| − τ, 0)``) with
    τ = ε, over ART's schedule of constants ``c`` (``initial_const·const_factor^k <
    largest_const``), projects each result onto the ε-ball and keeps the first one that is
    misclassified. Samples the model already gets wrong are left unchanged.
    """

    def __init__(self, classifier: Any, eps: float, **kwargs: Any) -> None:
        super().__init__(classifier, **kwargs)
        self.eps = eps

    def generate(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs: Any) -> np.ndarray:
        if y is None:
            raise ValueError("labels are required")
        labels = np.argmax(check_and_transform_label_format(y, nb_classes=self.estimator.nb_classes), axis=1)
        one_hot = np.eye(self.estimator.nb_classes, dtype=ART_NUMPY_DTYPE)[labels]
        clip_min, clip_max = self.estimator.clip_values
        x = x.astype(ART_NUMPY_DTYPE)
        x_adv = x.copy()
        predicted = np.argmax(self.estimator.predict(x, batch_size=self.batch_size), axis=1)
        for index in np.flatnonzero(predicted == labels):
            sample, target = x[[index]], one_hot[[index]]
            const = self.initial_const
            while const < self.largest_const:
                candidate = self._generate_single(
                    sample, target, clip_min, clip_max, const=const, tau=self.eps
                )
                candidate = sample + np.clip(candidate - sample, -self.eps, self.eps)
                candidate = np.clip(candidate, clip_min, clip_max).astype(ART_NUMPY_DTYPE)
                if np.argmax(self.estimator.predict(candidate), axis=1)[0] != labels[index]:
                    x_adv[index] = candidate[0]
                    break
                const *= self.const_factor
        return x_adv


@dataclass(frozen=True)
class CWLinfSettings:
    """C&W L∞ settings (ART's defaults).

    ART's gradient of the C&W L∞ objective does not depend on c: the constant only decides
    when Adam stops (at ``c·loss₁ + loss₂ < 0.001``), so the runs of the schedule follow one
    path and stop at different points of it, and the first misclassified one is kept.

    Attributes:
        confidence: Margin κ by which another class's logit must exceed the label's (0).
        max_iter: Adam steps per constant c (10). A step moves a pixel by at most about
            ``learning_rate/2``, so 10 steps reach ε up to about 0.05; raise it for larger ε.
        learning_rate: Adam step size in tanh space (0.01).
        initial_const: First trade-off constant c (1e-5).
        largest_const: The schedule of c stops below this value (20).
        const_factor: Factor between consecutive constants (2).
    """

    confidence: float = 0.0
    max_iter: int = 10
    learning_rate: float = 0.01
    initial_const: float = 1e-5
    largest_const: float = 20.0
    const_factor: float = 2.0

    def validate(self) -> None:
        if self.confidence < 0:
            raise ValueError("confidence must be >= 0")
        if self.max_iter < 1:
            raise ValueError("max_iter must be >= 1")
        if self.learning_rate <= 0:
            raise ValueError("learning_rate must be > 0")
        if not 0 < self.initial_const < self.largest_const:
            raise ValueError("initial_const must be > 0 and below largest_const")
        if self.const_factor <= 1:
            raise ValueError("const_factor must be > 1")


class CWLinf(ARTEvasionAttack):
    """C&W L∞ bounded by ε: ART's C&W L∞ objective and optimiser with τ = ε (see
    :class:`BoundedCarliniLInf`), each result projected onto the ε-ball.

    Deterministic (no random start); single-label classification only. ART's C&W L∞ treats
    one sample at a time, so it is much slower than PGD.
    """

    name = "cw-linf"
    description = "Carlini & Wagner L∞, τ fixed at ε, projected onto the ε-ball (ART CarliniLInfMethod)"
    threat_model = "linf"
    tasks = CLASSIFICATION
    budget_name = "eps"
    default_budgets = (4 / 255, 8 / 255)
    Settings = CWLinfSettings

    def generate(
        self, estimator: Any, x: torch.Tensor, y: torch.Tensor, budget: float, *, seed: int
    ) -> torch.Tensor:
        require_single_label(self.name, estimator, y)
        return super().generate(estimator, x, y, budget, seed=seed)

    def make(self, estimator: Any, budget: float, batch_size: int) -> Any:
        settings: CWLinfSettings = self.settings
        return BoundedCarliniLInf(
            estimator,
            eps=budget,
            confidence=settings.confidence,
            max_iter=settings.max_iter,
            learning_rate=settings.learning_rate,
            initial_const=settings.initial_const,
            largest_const=settings.largest_const,
            const_factor=settings.const_factor,
            batch_size=batch_size,
            verbose=False,
        )
