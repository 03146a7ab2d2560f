"""The ColorU colorization module (Morra et al. 2020, Fig. 3): a small U-Net of strided convolutions.

Blocks (LeakyReLU slope 0.01 after every convolution but the last, BatchNorm *after* the
activation, as the paper describes):

* ``ColorDown(i, o)``: Conv(i, o, 3, 1, 1) → LReLU → Conv(o, o, 4, 2, 1) → LReLU → BN(o); halves the size.
* ``ColorUp(i, o)``: ConvT(i, o, 4, 2, 1) → LReLU → Conv(o, o, 3, 1, 1) → LReLU → Conv(o, o, 3, 1, 1)
  → LReLU → BN(o); doubles the size.
* ``ColorOut(i, o, last)``: ConvT(i, o, 4, 2, 1) → LReLU → Conv(o, o, 3, 1, 1) → LReLU → Conv(o, last, 1);
  the figure draws the last convolution 3x3, the reference code uses 1x1, and so do we.

Forward: ``x1 = dw1(x)`` (16 ch, H/2), ``x2 = dw2(x1)`` (32, H/4), ``x3 = dw3(x2)`` (64, H/8),
``x3 = up1(x3)`` (32, H/4), ``x2 = up2([x2, x3])`` (16, H/2), ``out = out([x1, x2])`` (3, H).
No final activation.

Parameters (measured): 192,659 with one input channel (144 more per extra input channel),
0.323 of DECONV's 596,611 and 0.321 of PixelShuffle's 599,440: the paper's "ratio of about
1/3" holds.

Initialisation: as DECONV (Xavier-uniform Conv2d weights, BN weight 1 and bias 0; the
transposed convolutions keep PyTorch's default). The reference declares this init for
ColorU but never applies it.

Sizes: H and W must be multiples of 8 (three halvings, then skip connections).
"""

from __future__ import annotations

import torch
from torch import nn

from medbench_colorization.blocks import xavier_init

DIVISOR = 8
"""Input sizes must be multiples of this (three stride-2 stages)."""


class ColorDown(nn.Sequential):
    """Conv(in, out, 3, 1, 1) → LReLU → Conv(out, out, 4, 2, 1) → LReLU → BN(out)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1),
            nn.LeakyReLU(),
            nn.Conv2d(out_channels, out_channels, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(),
            nn.BatchNorm2d(out_channels),
        )


class ColorUp(nn.Sequential):
    """ConvT(in, out, 4, 2, 1) → LReLU → Conv(out, out, 3) → LReLU → Conv(out, out, 3) → LReLU → BN(out)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.ConvTranspose2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1),
            nn.LeakyReLU(),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1),
            nn.LeakyReLU(),
            nn.BatchNorm2d(out_channels),
        )


class ColorOut(nn.Sequential):
    """ConvT(in, out, 4, 2, 1) → LReLU → Conv(out, out, 3, 1, 1) → LReLU → Conv(out, last, 1)."""

    def __init__(self, in_channels: int, out_channels: int, last_channels: int) -> None:
        super().__init__(
            nn.ConvTranspose2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1),
            nn.LeakyReLU(),
            nn.Conv2d(out_channels, last_channels, kernel_size=1),
        )


class ColorU(nn.Module):
    """ColorU: three ColorDown, two ColorUp with skip connections, and ColorOut to 3 channels.

    Input ``(N, in_channels, H, W)`` with H, W multiples of 8; output ``(N, 3, H, W)``.
    """

    def __init__(self, in_channels: int = 1) -> None:
        """Create the module.

        Args:
            in_channels: Channels of the input image (1 for grayscale, as in the paper).
        """
        super().__init__()
        self.dw1 = ColorDown(in_channels, 16)
        self.dw2 = ColorDown(16, 32)
        self.dw3 = ColorDown(32, 64)
        self.up1 = ColorUp(64, 32)
        self.up2 = ColorUp(32 + 32, 16)
        self.out = ColorOut(16 + 16, 16, 3)
        xavier_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Colorize ``x``.

        Raises:
            ValueError: When the height or width is not a multiple of 8.
        """
        height, width = x.shape[-2:]
        if height % DIVISOR or width % DIVISOR:
            raise ValueError(f"ColorU needs a height and width divisible by {DIVISOR}, got {height}x{width}")
        x1 = self.dw1(x)
        x2 = self.dw2(x1)
        x3 = self.up1(self.dw3(x2))
        x2 = self.up2(torch.cat([x2, x3], dim=1))
        return self.out(torch.cat([x1, x2], dim=1))
