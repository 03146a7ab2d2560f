"""APGD-CE (Croce & Hein, 2020) through ART's ``AutoProjectedGradientDescent``."""

from __future__ import annotations

from medbench_art._apgd import APGD


class APGDCE(APGD):
    """Auto-PGD on the cross-entropy loss, L∞: PGD with momentum and a step size that halves
    itself when progress stalls; 100 iterations from a random start, initial step 2ε.

    Samples already misclassified are left unchanged. Single-label classification only.
    """

    name = "apgd-ce"
    description = (
        "Auto-PGD on cross-entropy, L∞, 100 iterations, adaptive step (ART AutoProjectedGradientDescent)"
    )
    loss_type = "cross_entropy"
