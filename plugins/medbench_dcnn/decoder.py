"""The decoder of the embedded auto-encoder: the official code's ``DR18``, for any channel count.

``DR18`` (XFeiF/Robustness-Pytorch, ``src/net.py``) decodes ResNet-18's ``layer1`` output
(64 channels, stride 4) back to the image with transposed convolutions:

* ``inv_layer0``: ConvT(c,64,3,1,1) → BN → ReLU → ConvT(64,64,3,1,1) → BN, plus the input
  (through a 1×1 convolution and BN when ``c`` ≠ 64, our generalisation), then ReLU;
* ``inv_layer1``: ConvT(64,64,3,s2,p1,op1) → BN → ReLU → ConvT(64,64,3,1,1) → BN, plus
  ``upsample`` ConvT(64,64,3,2,1,1) → BN, then ReLU (×2);
* ``inv_conv1``: ConvT(64,out,3,2,1,1) → BN → tanh (×2), range (−1, 1).

The transposed convolutions keep PyTorch's default initialisation, as in the code (its
init loop only touches Conv2d, BN and Linear layers).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _up(in_channels: int, out_channels: int) -> nn.ConvTranspose2d:
    """3×3 transposed convolution doubling the spatial size."""
    return nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding=1, output_padding=1)


def _same(in_channels: int, out_channels: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(in_channels, out_channels, 3, stride=1, padding=1)


class Decoder(nn.Module):
    """Decodes a stride-4 feature map into an image in (−1, 1) (the target is ``2x − 1``).

    Args:
        in_channels: Channels of the tapped feature map.
        out_channels: Channels of the image.
        width: Channels inside the decoder (64 in ``DR18``).
    """

    def __init__(self, in_channels: int, out_channels: int, width: int = 64) -> None:
        super().__init__()
        self.inv_layer0 = nn.Sequential(
            _same(in_channels, width), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            _same(width, width), nn.BatchNorm2d(width),
        )  # fmt: skip
        self.projection: nn.Module = (
            nn.Identity()
            if in_channels == width
            else nn.Sequential(nn.Conv2d(in_channels, width, 1, bias=False), nn.BatchNorm2d(width))
        )
        self.inv_layer1 = nn.Sequential(
            _up(width, width), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            _same(width, width), nn.BatchNorm2d(width),
        )  # fmt: skip
        self.upsample = nn.Sequential(_up(width, width), nn.BatchNorm2d(width))
        self.inv_conv1 = nn.Sequential(_up(width, out_channels), nn.BatchNorm2d(out_channels), nn.Tanh())

    def forward(self, features: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Decode ``features`` (×4 upsampling).

        Args:
            features: ``(N, in_channels, h, w)``.
            size: The image size ``(H, W)``. When the ×4 output differs (a tap whose stride is
                not 4, or an input size not divisible by 4) it is resized bilinearly to it,
                which keeps the values inside (−1, 1).

        Returns:
            ``(N, out_channels, H, W)`` in (−1, 1).
        """
        h = F.relu(self.inv_layer0(features) + self.projection(features))
        h = F.relu(self.inv_layer1(h) + self.upsample(h))
        image = self.inv_conv1(h)
        if size is not None and tuple(image.shape[-2:]) != tuple(size):
            image = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
        return image
