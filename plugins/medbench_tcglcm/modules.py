"""The texture module T and the color module C of Chen & Luo 2024 (paper 000, §4, Fig. 3).

No public code exists; the paper describes the modules in words, and these are
medbench's reading of it:

* **Texture module** ("a simplified auto-encoder: the encoder comprises convolutional,
  batch normalization, ReLU and max-pooling layers, ultimately generating a
  single-channel output; the decoder uses transpose convolutions to reconstruct the
  input"): two conv-BN-ReLU-maxpool stages (``width``, ``2·width`` channels) and a 1×1
  convolution to one channel at a quarter of the resolution (the "encoder output" of
  Fig. 2a), then two stride-2 transpose convolutions back to full resolution and a 3×3
  convolution to one channel with a sigmoid: a gray image in [0, 1].
* **Color module** ("mirrors the texture module but shallower; outputs a three-channel
  image"): one conv-BN-ReLU-maxpool stage, one stride-2 transpose convolution, a 1×1
  convolution to three channels and a sigmoid: an RGB image in [0, 1].

The sigmoids are medbench's choice: they keep both outputs images in [0, 1], so the
GLCM loss compares like with like (the paper's GLCM of ``grayscale(C(X))`` needs an
intensity range) and the colorized images can be saved and looked at (paper Fig. 4).
The RGB image is then normalised with the backbone's own mean and std (ImageNet's for
the torchvision backbones) before entering it, as any RGB image would be.

Inputs whose sides are not multiples of 4 are padded (replicate) and the outputs cropped.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from medbench.api import Normalization
from medbench.api.toolkit import normalize


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


def _up_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class TextureModule(nn.Module):
    """Auto-encoder from ``in_channels`` to a one-channel image in [0, 1] (same size)."""

    def __init__(self, in_channels: int = 1, width: int = 16) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            *_conv_bn_relu(in_channels, width),
            nn.MaxPool2d(2),
            *_conv_bn_relu(width, 2 * width),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 1, 1),
        )
        self.decoder = nn.Sequential(
            *_up_bn_relu(1, 2 * width),
            *_up_bn_relu(2 * width, width),
            nn.Conv2d(width, 1, 3, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _padded(lambda z: self.decoder(self.encoder(z)), x, multiple=4)


class ColorModule(nn.Module):
    """Shallower encoder-decoder from one channel to an RGB image in [0, 1] (same size)."""

    def __init__(self, in_channels: int = 1, width: int = 16) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            *_conv_bn_relu(in_channels, width),
            nn.MaxPool2d(2),
            *_up_bn_relu(width, width),
            nn.Conv2d(width, 3, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _padded(self.layers, x, multiple=2)


def _padded(function: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, multiple: int) -> torch.Tensor:
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return function(x)[..., :height, :width]


class TextureColorNetwork(nn.Module):
    """``F(B(C(T(x))))``: texture module, color module, then the backbone with its head.

    Takes the normalised input (as every medbench model does) and returns logits.
    """

    def __init__(
        self,
        texture: TextureModule,
        color: ColorModule,
        backbone: nn.Module,
        backbone_normalization: Normalization,
    ) -> None:
        super().__init__()
        self.texture = texture
        self.color = color
        self.backbone = backbone
        self.backbone_normalization = backbone_normalization

    def colorize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The texture module's gray image and the color module's RGB image, both in [0, 1]."""
        textured = self.texture(x)
        return textured, self.color(textured)

    def classify(self, colorized: torch.Tensor) -> torch.Tensor:
        """Logits of the backbone for an RGB image in [0, 1]."""
        return self.backbone(normalize(colorized, self.backbone_normalization))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.colorize(x)[1])
