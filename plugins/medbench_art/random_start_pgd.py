"""ART's NumPy PGD with a random start on estimators that are not classifiers (segmentation).

ART refuses ``num_random_init > 0`` outside ``ClassifierMixin`` ("Random initialisation is
only supported for classification"), because restarts pick the best start per sample by
classification success. A *single* random start needs no such criterion: this subclass runs
ART's own iteration (``_compute``, with ART's uniform ``random_sphere`` start inside the
ε-ball, clipped to ``clip_values``) from one random start, as paper 003's reference PGD does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from art.attacks.evasion.projected_gradient_descent.projected_gradient_descent_numpy import (
    ProjectedGradientDescentNumpy,
)
from art.config import ART_NUMPY_DTYPE
from art.estimators.classification.classifier import ClassifierMixin


class RandomStartPGD(ProjectedGradientDescentNumpy):
    """PGD (NumPy path) that also accepts one random start for non-classifier estimators."""

    def generate(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs: Any) -> np.ndarray:
        if isinstance(self.estimator, ClassifierMixin) or self.num_random_init == 0:
            return super().generate(x, y, **kwargs)
        if self.num_random_init > 1:
            raise ValueError(
                "PGD restarts (num_random_init > 1) need a per-sample success criterion, which only "
                "classification has; use num_random_init=1 for segmentation"
            )
        mask = self._get_mask(x, **kwargs)
        self._check_compatibility_input_and_eps(x=x)
        self._random_eps()
        targets = self._set_targets(x, y, classifier_mixin=False)
        adv_x = x.astype(ART_NUMPY_DTYPE)
        momentum = np.zeros(adv_x.shape)
        for iteration in range(self.max_iter):
            self._i_max_iter = iteration
            adv_x = self._compute(
                adv_x,
                x,
                targets,
                mask,
                self.eps,
                self.eps_step,
                self._project,
                iteration == 0,
                decay=self.decay,
                momentum=momentum,
            )
        return adv_x
