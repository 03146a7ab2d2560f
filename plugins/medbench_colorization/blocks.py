"""Building blocks shared by the DECONV and PixelShuffle colorization modules.

Both modules start with the same trunk (Morra et al. 2020, Fig. 2, after Carlucci et al.'s
DE²CO): a 7x7 stride-2 convolution, BatchNorm, LeakyReLU and a 3x3 stride-2 max-pool, which
bring the image to a quarter of its size with 64 channels, then eight residual blocks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

TRUNK_CHANNELS = 64
"""Channels of the trunk's feature maps."""
RESIDUAL_BLOCKS = 8
"""Residual blocks in the trunk."""
UPSCALE = 4
"""Spatial factor between the input and the trunk's output (up to rounding)."""


def conv_layer(ni: int, nf: int, k: int = 3, s: int = 1, p: int = 1) -> nn.Sequential:
    """Conv2d (with bias) → BatchNorm2d → LeakyReLU (slope 0.01).

    Args:
        ni: Input channels.
        nf: Output channels.
        k: Kernel size.
        s: Stride.
        p: Zero padding.
    """
    return nn.Sequential(
        nn.Conv2d(ni, nf, kernel_size=k, stride=s, padding=p),
        nn.BatchNorm2d(nf),
        nn.LeakyReLU(inplace=True),
    )


class ResBlock(nn.Module):
    """``x + conv_layer(conv_layer(x))`` with 3x3 convolutions; no activation after the sum."""

    def __init__(self, ni: int) -> None:
        """Create the block.

        Args:
            ni: Channels of the input and of the output.
        """
        super().__init__()
        self.conv1 = conv_layer(ni, ni)
        self.conv2 = conv_layer(ni, ni)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.conv1(x))


def stem(in_channels: int) -> nn.Sequential:
    """Conv2d(in, 64, k7, s2, p2) → BN → LeakyReLU → MaxPool2d(3, 2, 1).

    An ``H`` input becomes ``ceil(floor((H - 1) / 2) / 2)``: 224 → 56, 64 → 16, 32 → 8.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, TRUNK_CHANNELS, kernel_size=7, stride=2, padding=2),
        nn.BatchNorm2d(TRUNK_CHANNELS),
        nn.LeakyReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    )


def residual_blocks(channels: int = TRUNK_CHANNELS, count: int = RESIDUAL_BLOCKS) -> nn.Sequential:
    """``count`` :class:`ResBlock` of ``channels`` channels in a row."""
    return nn.Sequential(*(ResBlock(channels) for _ in range(count)))


def xavier_init(module: nn.Module) -> None:
    """The reference's "init 0": Xavier-uniform weights of every ``Conv2d``, BN weight 1 and bias 0.

    Conv biases and transposed convolutions keep PyTorch's default initialisation (as in
    the reference, whose rule matches ``nn.Conv2d`` only).
    """
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.xavier_uniform_(layer.weight)
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)


def match_size(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize ``x`` to the spatial ``size`` with ``F.adaptive_avg_pool2d`` when it differs.

    The reference's wrapper has the same optional step (``use_aap``). It only ever changes
    a map by a few pixels here: the trunk's rounding makes some input sizes unreachable by
    the x4 upsampling (e.g. 35 → 36).
    """
    if tuple(x.shape[-2:]) == size:
        return x
    return F.adaptive_avg_pool2d(x, size)
