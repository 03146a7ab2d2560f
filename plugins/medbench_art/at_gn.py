"""Defense ``at-gn``: training on Gaussian-noise-augmented inputs (paper 003's M^GN)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn.functional import cross_entropy

from medbench.api.toolkit import Criterion
from medbench_art._adversarial_training import AdversarialTraining, Logits


class GaussianNoiseTraining(AdversarialTraining):
    """Trains on ``clip(x + σ·N(0, 1), 0, 1)`` only: the random-noise counterpart of the
    adversarial rows, the same perturbation as the ``gn`` attack."""

    name = "at-gn"
    description = "Gaussian-noise training (σ=8/255), the random-noise counterpart of at-*"

    @dataclass(frozen=True)
    class Settings:
        """Settings of Gaussian-noise training.

        Attributes:
            sigma: Noise standard deviation on the [0, 1] scale (8/255).
        """

        sigma: float = 8 / 255

        def validate(self) -> None:
            if not 0 <= self.sigma <= 1:
                raise ValueError("sigma must be in [0, 1]")

    def perturb(
        self,
        logits: Logits,
        x: torch.Tensor,
        y: torch.Tensor,
        generator: torch.Generator,
        loss: Criterion = cross_entropy,
    ) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (x + self.settings.sigma * noise).clamp(0.0, 1.0)
