"""What the single-label classification attacks share: input checks and projections.

The C&W, AutoAttack, APGD, Square, DeepFool and HopSkipJump attacks define success as "the
arg-max class is no longer the label", which multi-label data do not have; they refuse such
data with a one-line :class:`~medbench.api.toolkit.CellError` instead of failing inside ART.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medbench.api.toolkit import CellError, predict_logits


def require_single_label(name: str, estimator: Any, y: torch.Tensor) -> None:
    """Refuse multi-label data (0/1 target matrices, or an estimator trained with BCE).

    Raises:
        CellError: Naming the attack and the reason.
    """
    loss = getattr(estimator, "_loss", None)
    if y.dim() != 1 or isinstance(loss, (nn.BCEWithLogitsLoss, nn.BCELoss)):
        raise CellError(
            f"attack {name!r} supports single-label classification only, and this dataset is multi-label"
        )


def require_classes(name: str, estimator: Any, minimum: int, reason: str, advice: str = "") -> None:
    """Refuse models with fewer than ``minimum`` classes.

    Raises:
        CellError: Naming the attack, the reason, the number of classes and the advice.
    """
    classes = int(estimator.nb_classes)
    if classes < minimum:
        tail = f": {advice}" if advice else ""
        raise CellError(
            f"attack {name!r} needs at least {minimum} classes ({reason}) and this model has {classes}{tail}"
        )


def correctly_classified(estimator: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the samples the model gets right (white-box prediction, not a counted query)."""
    return predict_logits(estimator, x).argmax(dim=1) == y


def project_linf(x: torch.Tensor, x_adv: torch.Tensor, radius: float) -> torch.Tensor:
    """Project ``x_adv`` onto the L∞ ball of ``radius`` around ``x`` (clip the perturbation), in [0, 1]."""
    return (x + (x_adv - x).clamp(-radius, radius)).clamp(0.0, 1.0)


def project_l2(x: torch.Tensor, x_adv: torch.Tensor, radius: float) -> torch.Tensor:
    """Project ``x_adv`` onto the L2 ball of ``radius`` around ``x``.

    A perturbation longer than ``radius`` is scaled down to it (``δ ← δ·radius/‖δ‖₂``); shorter
    ones are kept. The result lies on the segment between ``x`` and ``x_adv``, hence in [0, 1].
    Float32 rounding can leave the stored norm a hair above ``radius``: those samples are shrunk
    once more by that excess.
    """
    result = x_adv
    for _ in range(4):
        delta = (result - x).flatten(1).double()
        norms = delta.norm(dim=1)
        over = norms > radius
        if not bool(over.any()):
            break
        scale = torch.where(over, radius / norms.clamp_min(1e-30) * (1 - 1e-7), torch.ones_like(norms))
        shrunk = (delta * scale[:, None]).view_as(x)
        result = (x.double() + shrunk).to(x.dtype).clamp(0.0, 1.0)
    return result
