"""Differentiable rounding of quantised DCT coefficients, and VAFA's annealing schedule.

VAFA (paper 003) rounds ``dct / q`` with AdvDrop's ``phi_diff`` (Duan et al., ICCV 2021): a
``tanh`` step on each unit interval whose sharpness grows as ``alpha`` falls, so the attack sees
gradients early and near-hard rounding late. There is no straight-through estimator.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["alpha_schedule", "soft_round"]

_ALPHA_MAX = 2.0


def soft_round(x: Tensor, alpha: float) -> Tensor:
    """Differentiable rounding ``phi_diff`` of VAFA / AdvDrop.

    With ``s = 1 / (1 - alpha)`` and ``k = log(2 / alpha - 1)``::

        out = (tanh((x - floor(x) - 0.5) · k) · s + 1) / 2 + floor(x)

    Since ``tanh(k / 2) = 1 - alpha``, ``out`` is exact at integers and half-integers, is odd
    around every half-integer, and tends to ``round(x)`` as ``alpha → 0``. Like the reference,
    ``alpha`` is clamped to at most 2 (without its CUDA-only ``torch.where``); only
    ``0 < alpha < 1`` is a meaningful soft rounding (``alpha = 1`` gives NaN).

    Args:
        x: Values to round (any shape, floating point).
        alpha: Softness, ``> 0``; VAFA anneals it from 0.1 towards 0 (:func:`alpha_schedule`).

    Returns:
        Tensor like ``x``. The gradient flows through the ``tanh`` only (``floor`` has none).

    Raises:
        ValueError: If ``alpha <= 0``.
    """
    alpha = float(alpha)
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    alpha = min(alpha, _ALPHA_MAX)
    s = 1.0 / (1.0 - alpha) if alpha != 1.0 else math.inf
    k = math.log(2.0 / alpha - 1.0) if alpha < _ALPHA_MAX else -math.inf
    floor = torch.floor(x)
    return (torch.tanh((x - floor - 0.5) * k) * s + 1.0) / 2.0 + floor


def alpha_schedule(steps: int, start: float = 0.1, end: float = 1e-20) -> list[float]:
    """The ``alpha`` used at each of VAFA's ``steps`` steps.

    The reference starts at ``start`` and adds ``(end - start) / steps`` **after** each step, so
    the last alpha used is one interval short of ``end``: for 20 steps, 0.100, 0.095, …, 0.005.

    Args:
        steps: Number of attack steps, ``>= 1``.
        start: Alpha at the first step.
        end: The value the schedule heads for (never reached).

    Returns:
        ``[start + i · (end - start) / steps for i in range(steps)]``.

    Raises:
        ValueError: If ``steps < 1``.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    interval = (end - start) / steps
    return [start + i * interval for i in range(steps)]
