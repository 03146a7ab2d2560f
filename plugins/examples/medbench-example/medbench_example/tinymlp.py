"""Model ``tinymlp``: pooling to 8×8, then a two-layer perceptron."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from medbench.api import Model, Task
from medbench.api.toolkit import UsageError


class TinyMLP(Model):
    """``AdaptiveAvgPool2d(8) → Flatten → Linear → ReLU → Linear``; any input size."""

    name = "tinymlp"
    description = "Two-layer perceptron on an 8×8 pooled image (example plugin)"

    @dataclass(frozen=True)
    class Settings:
        """TinyMLP settings.

        Attributes:
            hidden: Width of the hidden layer.
        """

        hidden: int = 64

    def build(self, task: Task, in_channels: int, num_classes: int, weights: str | None = None) -> nn.Module:
        if weights is not None:
            raise UsageError(f"model 'tinymlp' has no pretrained weights (got {weights!r})")
        return nn.Sequential(
            nn.AdaptiveAvgPool2d(8),
            nn.Flatten(),
            nn.Linear(in_channels * 64, self.settings.hidden),
            nn.ReLU(),
            nn.Linear(self.settings.hidden, num_classes),
        )
