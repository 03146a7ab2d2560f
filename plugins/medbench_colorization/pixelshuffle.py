"""The PixelShuffle colorization module (Morra et al. 2020, Fig. 2).

Layers: the shared trunk (as DECONV), then sub-pixel upsampling: Conv2d(64, 48, k1) with
ICNR initialisation → BatchNorm2d(48) → Hardtanh(−10000, 10000) → PixelShuffle(4) →
ReplicationPad2d((1, 0, 1, 0)) → AvgPool2d(2, stride 1), a 2x2 blur against checkerboard
artifacts.

Parameters (measured): 599,440 with one input channel: trunk 596,224 as DECONV, the 1x1
convolution 3,120 and its BN 96; 3,136 more per extra input channel.

Initialisation: PyTorch's defaults except the 1x1 convolution, whose weight is ICNR
(Aitken et al. 2017): one Kaiming-normal kernel per colour, repeated for the 16 sub-pixel
positions, so that the shuffle starts as nearest-neighbour upsampling. Its bias is set to
zero (the reference leaves it random, which breaks that property in eval mode; in train
mode the BatchNorm cancels it anyway).

Sizes: the trunk and the x4 shuffle give ``4 * ceil(floor((H - 1) / 2) / 2)``, which is
``H`` when ``H`` is a multiple of 4 (224, 64, 32); other sizes are resized to ``H`` with
``F.adaptive_avg_pool2d``.
"""

from __future__ import annotations

import torch
from torch import nn

from medbench_colorization.blocks import TRUNK_CHANNELS, UPSCALE, match_size, residual_blocks, stem

COLORS = 3


def icnr_(weight: torch.Tensor, scale: int) -> torch.Tensor:
    """Fill a sub-pixel convolution's weight with ICNR, in place.

    Output channel ``c * scale**2 + k`` of the convolution becomes pixel ``k`` of the
    ``scale x scale`` block of colour ``c`` after ``nn.PixelShuffle(scale)``; giving all of
    them colour ``c``'s kernel makes the shuffle a nearest-neighbour upsampling at first.

    Args:
        weight: ``(colors * scale**2, in, kh, kw)``.
        scale: The pixel-shuffle factor.
    """
    positions = scale**2
    if weight.shape[0] % positions:
        raise ValueError(f"{weight.shape[0]} output channels are not a multiple of {positions}")
    sub_kernel = torch.empty(weight.shape[0] // positions, *weight.shape[1:])
    nn.init.kaiming_normal_(sub_kernel)
    with torch.no_grad():
        weight.copy_(sub_kernel.repeat_interleave(positions, dim=0))
    return weight


class PixelShuffleColorizer(nn.Module):
    """PixelShuffle: trunk, ICNR-initialised 1x1 conv, pixel shuffle x4, 2x2 blur.

    Input ``(N, in_channels, H, W)``, output ``(N, 3, H, W)``, not bounded (the Hardtanh
    at ±10000 only guards against overflow).
    """

    def __init__(self, in_channels: int = 1) -> None:
        """Create the module.

        Args:
            in_channels: Channels of the input image (1 for grayscale, as in the paper).
        """
        super().__init__()
        self.stem = stem(in_channels)
        self.resblocks = residual_blocks()
        sub_pixels = COLORS * UPSCALE**2
        conv = nn.Conv2d(TRUNK_CHANNELS, sub_pixels, kernel_size=1)
        icnr_(conv.weight, UPSCALE)
        assert conv.bias is not None
        nn.init.zeros_(conv.bias)
        self.shuffle = nn.Sequential(
            conv, nn.BatchNorm2d(sub_pixels), nn.Hardtanh(-10000.0, 10000.0), nn.PixelShuffle(UPSCALE)
        )
        self.blur = nn.Sequential(nn.ReplicationPad2d((1, 0, 1, 0)), nn.AvgPool2d(2, stride=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[-2], x.shape[-1])
        return match_size(self.blur(self.shuffle(self.resblocks(self.stem(x)))), size)
