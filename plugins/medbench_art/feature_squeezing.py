"""Defense ``feature-squeezing``: bit-depth reduction (Xu et al., 2018; ART's ``FeatureSqueezing``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medbench.api import DefenseContext
from medbench.api.toolkit import DefensePreprocessor, GradientMode
from medbench_art._preprocessing import Gradient, PreprocessingDefense, check_gradient


class BitDepthReduction(DefensePreprocessor):
    """``round(x · (2^b − 1)) / (2^b − 1)`` on the device: ART's ``FeatureSqueezing`` on [0, 1],
    without its NumPy round trip. Rounding has no useful gradient: attacks use BPDA."""

    differentiable = False

    def __init__(self, bit_depth: int, device: torch.device, gradient: GradientMode) -> None:
        super().__init__(device, gradient)
        self.levels = float(2**bit_depth - 1)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x.clamp(0.0, 1.0) * self.levels) / self.levels


@dataclass(frozen=True)
class FeatureSqueezingSettings:
    """Feature-squeezing settings.

    Attributes:
        bit_depth: Bits per value kept, 1–8 (4; Xu et al. use 1 for MNIST, 4–5 for colour images).
        gradient: ``bpda`` (identity backward) or ``blocked`` (no gradient; naive attacks).
    """

    bit_depth: int = 4
    gradient: Gradient = "bpda"

    def validate(self) -> None:
        if not 1 <= self.bit_depth <= 8:
            raise ValueError("bit_depth must be in [1, 8]")
        check_gradient(self.gradient)


class FeatureSqueezing(PreprocessingDefense):
    """Reduces every input value to ``bit_depth`` bits."""

    name = "feature-squeezing"
    description = "Bit-depth reduction in front of the standard model (ART FeatureSqueezing; BPDA)"
    Settings = FeatureSqueezingSettings

    def preprocessor(self, ctx: DefenseContext) -> DefensePreprocessor:
        s: FeatureSqueezingSettings = self.settings
        return BitDepthReduction(s.bit_depth, ctx.device, s.gradient)
