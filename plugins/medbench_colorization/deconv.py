"""The DECONV colorization module (Morra et al. 2020, Fig. 2; after DE²CO, Carlucci et al. 2018).

Layers: the shared trunk (:func:`~medbench_colorization.blocks.stem` and eight residual
blocks of 64 channels), a 1x1 convolution to 3 channels, and a grouped transposed
convolution (kernel 8, stride 4, padding 2, ``groups=3``, no bias) that upsamples each
colour channel on its own by 4 back to the input's size.

Parameters (measured): 596,611 with one input channel: trunk 596,224 (stem 3,328, residual
blocks 592,896), 1x1 convolution 195, transposed convolution 192; 3,136 more per extra
input channel.

Sizes: the transposed convolution is called with ``output_size`` = the input's size. That
size is reachable for every ``H`` except ``H % 4 == 3``, where the trunk rounds up
(35 → 9 → 36); the output is then resized to ``H`` with ``F.adaptive_avg_pool2d``.
"""

from __future__ import annotations

import torch
from torch import nn

from medbench_colorization.blocks import (
    TRUNK_CHANNELS,
    UPSCALE,
    match_size,
    residual_blocks,
    stem,
    xavier_init,
)

COLORS = 3


class Deconv(nn.Module):
    """DECONV: trunk, 1x1 conv to RGB, grouped x4 transposed convolution.

    Input ``(N, in_channels, H, W)``, output ``(N, 3, H, W)``, not bounded (no final
    activation; the backbone takes it as it is).
    """

    def __init__(self, in_channels: int = 1) -> None:
        """Create the module with the reference's "init 0" (Xavier-uniform conv weights, BN 1/0).

        Args:
            in_channels: Channels of the input image (1 for grayscale, as in the paper).
        """
        super().__init__()
        self.stem = stem(in_channels)
        self.resblocks = residual_blocks()
        self.conv_last = nn.Conv2d(TRUNK_CHANNELS, COLORS, kernel_size=1)
        self.deconv = nn.ConvTranspose2d(
            COLORS, COLORS, kernel_size=8, stride=UPSCALE, padding=2, groups=COLORS, bias=False
        )
        xavier_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[-2], x.shape[-1])
        features = self.conv_last(self.resblocks(self.stem(x)))
        # ConvTranspose2d(k8, s4, p2) gives 4*h + output_padding with output_padding < 4
        reachable = all(
            UPSCALE * small <= big < UPSCALE * (small + 1)
            for small, big in zip(features.shape[-2:], size, strict=True)
        )
        if reachable:
            return self.deconv(features, output_size=list(size))
        return match_size(self.deconv(features), size)
