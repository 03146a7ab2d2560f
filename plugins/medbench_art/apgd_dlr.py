"""APGD-DLR (Croce & Hein, 2020) through ART's ``AutoProjectedGradientDescent``."""

from __future__ import annotations

from typing import Any

import torch

from medbench_art._apgd import APGD
from medbench_art._classification import require_classes


class APGDDLR(APGD):
    """Auto-PGD on the Difference of Logits Ratio ``−(z_y − max_{i≠y} z_i) / (z_π1 − z_π3)``,
    L∞: invariant to shifting and scaling the logits, so gradient masking by large logits
    does not stop it. 100 iterations from a random start, initial step 2ε.

    The DLR loss needs the third-largest logit, hence at least 3 classes: on binary data the
    cell fails with a one-line error (use ``apgd-ce`` there). Single-label classification only.
    """

    name = "apgd-dlr"
    description = "Auto-PGD on the DLR loss, L∞, 100 iterations; needs >= 3 classes (ART)"
    loss_type = "difference_logits_ratio"

    def check(self, estimator: Any, y: torch.Tensor) -> None:
        super().check(estimator, y)
        require_classes(
            self.name, estimator, 3, "the DLR loss uses the third-largest logit", "use apgd-ce on binary data"
        )
