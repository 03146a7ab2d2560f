"""``smallcnn``: a four-block CNN that trains in seconds on a CPU; the default model."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from medbench.api import CLASSIFICATION, Model, Normalization, Task
from medbench_models.weights import check_build_args, load_checkpoint, load_state_strict, resolve_weights


def _block(in_channels: int, out_channels: int, *, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


def small_cnn(in_channels: int, num_classes: int, width: int = 16, dropout: float = 0.2) -> nn.Sequential:
    """Build the network of :class:`SmallCNN`.

    Four 3x3 conv + BatchNorm + ReLU blocks with ``width``, ``2*width``, ``4*width`` and
    ``4*width`` channels (the first three followed by a 2x2 max-pool), global average
    pooling, dropout and a linear classifier. Works for any input of at least 8x8.

    Args:
        in_channels: Input channels.
        num_classes: Output logits.
        width: Channels of the first block.
        dropout: Dropout probability before the classifier.
    """
    return nn.Sequential(
        _block(in_channels, width, pool=True),
        _block(width, 2 * width, pool=True),
        _block(2 * width, 4 * width, pool=True),
        _block(4 * width, 4 * width, pool=False),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(4 * width, num_classes),
    )


class SmallCNN(Model):
    """A small CPU-friendly CNN for quick benchmarks and tests.

    Weights: None (random init) or a local ``.pt`` / ``.pth`` state dict; there are no
    named (ImageNet) weights. Inputs are normalised with mean 0.5 and std 0.25 per channel.
    """

    name = "smallcnn"
    description = "small 4-block CNN (16-32-64-64 channels), trains in seconds on CPU; the default model"
    tasks = CLASSIFICATION
    dims = 2

    @dataclass(frozen=True)
    class Settings:
        """Settings of ``smallcnn``.

        Attributes:
            width: Channels of the first block; the blocks have width, 2x, 4x, 4x.
            dropout: Dropout probability before the final linear layer.
        """

        width: int = 16
        dropout: float = 0.2

        def validate(self) -> None:
            if self.width < 1:
                raise ValueError(f"width must be at least 1, got {self.width}")
            if not 0.0 <= self.dropout < 1.0:
                raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def normalization(self, in_channels: int) -> Normalization:
        """Mean 0.5 and std 0.25 on every channel."""
        return Normalization((0.5,) * in_channels, (0.25,) * in_channels)

    def build(self, task: Task, in_channels: int, num_classes: int, weights: str | None = None) -> nn.Module:
        """Build a fresh ``smallcnn``.

        Args:
            task: Only ``classification``.
            in_channels: Input channels.
            num_classes: Output logits.
            weights: None or a local state-dict file saved from a ``smallcnn`` with the same
                ``in_channels``, ``num_classes`` and ``width``.

        Raises:
            UsageError: On another task, named weights, a missing file or a state dict that
                does not fit.
        """
        owner = f"model {self.name!r}"
        check_build_args(owner, self.tasks, task, in_channels, num_classes)
        source = resolve_weights(weights, owner=owner)
        width, dropout = self.settings.width, self.settings.dropout
        if source.kind == "file":
            assert source.path is not None
            state = load_checkpoint(source.path, owner=owner)
            with torch.device("meta"):
                model = small_cnn(in_channels, num_classes, width, dropout)
            load_state_strict(model, state, source=str(source.path), owner=owner)
            return model
        return small_cnn(in_channels, num_classes, width, dropout)
