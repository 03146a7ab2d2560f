"""Checks of a defended model's gradients, run once per defended model before its cells.

Two of the sanity checks of the leaderboard (see :mod:`medbench.measuring.sanity`) need the model
itself, not just the cells' metrics:

* **zero or non-finite input gradients** (ART's gradient check): a defense that shatters or
  masks gradients (a non-differentiable step without BPDA, a saturated softmax) makes every
  gradient attack look weak. Measured as the share of evaluation samples whose loss gradient
  is all zero, and the share with a NaN or infinite entry.
* **an unbounded attack** (Carlini et al.'s "unbounded attacks must succeed", ART's
  obfuscated-gradient check): with ε = 1 any image can become any other, so accuracy under a
  gradient attack must fall to chance or below. Classification only.

The numbers are logged as metrics of every cell of the defended model
(:data:`GROUP_CHECK_METRICS`), so that the leaderboard can flag them from MLflow alone.
"""

from __future__ import annotations

from typing import Any

import torch

from medbench.measuring.sanity import CHECK_SAMPLES
from medbench.wrapping.estimators import input_gradient, predict_logits

GROUP_CHECK_METRICS: tuple[str, ...] = (
    "sanity_zero_gradients",
    "sanity_nonfinite_gradients",
    "sanity_unbounded_accuracy",
    "sanity_chance_accuracy",
)
"""Per defended model: share of samples with an all-zero input gradient, share with a
non-finite one, accuracy under an unbounded gradient attack, and the chance level it is
compared with (1/K classes; 0 for multi-label data, where an unbounded attack can flip a
label of every sample). The last two are NaN for segmentation."""

UNBOUNDED_SCHEDULE: tuple[tuple[int, float], ...] = ((30, 1 / 255), (20, 4 / 255), (10, 16 / 255))
"""The unbounded attack's signed steps, as ``(count, size)``, small ones first.

Small steps follow the loss where its gradient says something; the larger ones after them
let a sample travel the whole [0, 1] range (30 + 80 + 160 levels > 255). A fixed large step
(10 of 0.15 in medbench 0.1) overshoots: it jumps past the nearby wrong-class region into
saturated images that a network maps to one class, and left about half of the samples of
ordinary ResNet-18 and DenseNet-121 models "robust" at ε = 1, where this schedule leaves
none or the few whose gradient is exactly zero."""


def gradient_statistics(estimator: Any, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Shares of samples whose loss gradient with respect to the input is all zero, or non-finite.

    Args:
        estimator: An ART estimator with ``loss_gradient`` (classifier or segmentation).
        x: Inputs in [0, 1].
        y: Their labels.
    """
    grad = input_gradient(estimator, x, y).reshape(len(x), -1).float()
    nonfinite = ~torch.isfinite(grad).all(dim=1)
    zero = (torch.nan_to_num(grad, nan=1.0) == 0).all(dim=1)
    count = max(len(x), 1)
    return {
        "sanity_zero_gradients": float(zero.sum()) / count,
        "sanity_nonfinite_gradients": float(nonfinite.sum()) / count,
    }


def unbounded_accuracy(estimator: Any, x: torch.Tensor, y: torch.Tensor, multilabel: bool) -> float:
    """Accuracy (exact match for multi-label data) under an unbounded L∞ gradient attack.

    Signed gradient steps on the loss, of the sizes of :data:`UNBOUNDED_SCHEDULE`, with no
    projection but the [0, 1] range. A sample stays at its first misclassified iterate, and
    the loop ends when every sample is misclassified.
    """
    from medbench.measuring.metrics import correct_predictions

    steps = [size for count, size in UNBOUNDED_SCHEDULE for _ in range(count)]
    x_adv = x.detach().clone()
    done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for size in [*steps, None]:
        done |= ~correct_predictions(predict_logits(estimator, x_adv), y, multilabel).to(x.device)
        if size is None or bool(done.all()):
            break
        grad = input_gradient(estimator, x_adv, y)
        step = size * grad.sign() * (~done).view(-1, *([1] * (x.dim() - 1)))
        x_adv = (x_adv + step).clamp(0.0, 1.0)
    return float((~done).float().mean()) if len(x) else float("nan")


def group_checks(
    estimator: Any, x: torch.Tensor, y: torch.Tensor, *, task: str, multilabel: bool
) -> dict[str, float]:
    """The values of :data:`GROUP_CHECK_METRICS` on the first :data:`CHECK_SAMPLES` samples."""
    x, y = x[:CHECK_SAMPLES], y[:CHECK_SAMPLES]
    result = gradient_statistics(estimator, x, y)
    if task == "classification":
        result["sanity_unbounded_accuracy"] = unbounded_accuracy(estimator, x, y, multilabel)
        result["sanity_chance_accuracy"] = 0.0 if multilabel else 1.0 / max(int(estimator.nb_classes), 2)
    else:
        result["sanity_unbounded_accuracy"] = result["sanity_chance_accuracy"] = float("nan")
    return result
