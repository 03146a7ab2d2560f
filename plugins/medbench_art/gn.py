"""Gaussian noise: the random-perturbation baseline of paper 003 (budget σ)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from medbench.api import ALL_TASKS, Attack


class GaussianNoise(Attack):
    """``clip(x + σ·N(0, 1), 0, 1)``: not an adversarial attack, the noise floor to compare with.

    The noise is drawn on the input's device from a generator seeded by the cell, so a
    cell is reproducible. The budget σ is on the [0, 1] intensity scale (``8/255``).
    """

    name = "gn"
    description = "Gaussian noise N(0, σ²) added to the input and clipped to [0, 1] (budget σ)"
    threat_model = "noise"
    tasks = ALL_TASKS
    budget_name = "sigma"
    default_budgets = (4 / 255, 8 / 255)

    @dataclass(frozen=True)
    class Settings:
        """Gaussian noise has no tunable parameter besides σ."""

    def generate(
        self, estimator: Any, x: torch.Tensor, y: torch.Tensor, budget: float, *, seed: int
    ) -> torch.Tensor:
        generator = torch.Generator(device=x.device).manual_seed(seed)
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (x + budget * noise).clamp_(0.0, 1.0)
