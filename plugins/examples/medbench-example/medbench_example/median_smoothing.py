"""Defense ``median-smoothing``: a median filter in front of the standard-trained model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from art.defences.preprocessor.preprocessor import PreprocessorPyTorch
from torch.nn import functional as F

from medbench.api import DefendedModel, Defense, DefenseContext


class MedianFilter(PreprocessorPyTorch):
    """k×k median filter with reflection padding, as an ART framework-native preprocessor.

    The median is piecewise differentiable (the gradient flows to the selected pixel), so
    gradient attacks see through it without BPDA.
    """

    def __init__(self, size: int, device: torch.device) -> None:
        super().__init__(
            device_type="gpu" if device.type == "cuda" else "cpu", apply_fit=False, apply_predict=True
        )
        self.size = size

    def forward(self, x: torch.Tensor, y: Any = None) -> tuple[torch.Tensor, Any]:
        pad = self.size // 2
        padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        patches = padded.unfold(2, self.size, 1).unfold(3, self.size, 1)
        return patches.reshape(*patches.shape[:4], -1).median(dim=-1).values, y


class MedianSmoothing(Defense):
    """Preprocessing defense: ``model(median(x))`` with the base model trained normally."""

    name = "median-smoothing"
    description = "k×k median filter in front of the standard-trained model (example plugin)"
    kind = "preprocessing"
    trainable = False

    @dataclass(frozen=True)
    class Settings:
        """Median-smoothing settings.

        Attributes:
            size: Odd window size of the median filter.
        """

        size: int = 3

        def validate(self) -> None:
            if self.size < 1 or self.size % 2 == 0:
                raise ValueError("size must be a positive odd number")

    def build(self, ctx: DefenseContext) -> DefendedModel:
        base = ctx.base()
        preprocessors = [MedianFilter(self.settings.size, ctx.device), *base.preprocessors]
        return DefendedModel(base.model, base.normalization, preprocessors, dict(base.modules))
