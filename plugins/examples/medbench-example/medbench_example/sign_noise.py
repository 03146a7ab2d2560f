"""Attack ``sign-noise``: every pixel moved by +ε or −ε at random."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from medbench.api import Attack


class SignNoise(Attack):
    """The strongest *random* L∞ perturbation: ``clip(x + ε·s, 0, 1)`` with random signs ``s``."""

    name = "sign-noise"
    description = "Random ±ε on every pixel (L∞ random baseline; example plugin)"
    threat_model = "linf"
    budget_name = "eps"
    default_budgets = (4 / 255, 8 / 255)

    @dataclass(frozen=True)
    class Settings:
        """Sign-noise settings.

        Attributes:
            density: Share of pixels that are perturbed (the others stay unchanged).
        """

        density: float = 1.0

        def validate(self) -> None:
            if not 0 <= self.density <= 1:
                raise ValueError("density must be in [0, 1]")

    def generate(
        self, estimator: Any, x: torch.Tensor, y: torch.Tensor, budget: float, *, seed: int
    ) -> torch.Tensor:
        generator = torch.Generator(device=x.device).manual_seed(seed)
        signs = torch.randint(0, 2, x.shape, generator=generator, device=x.device).to(x.dtype) * 2 - 1
        keep = torch.rand(x.shape, generator=generator, device=x.device) < self.settings.density
        return (x + budget * signs * keep).clamp(0.0, 1.0)
