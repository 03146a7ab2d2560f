"""Defense ``reformer``: MagNet's reformer (Meng & Chen, CCS 2017), a denoising auto-encoder.

The auto-encoder follows MagNet's MNIST structure (``DenoisingAutoEncoder`` with structure
``[3, "average", 3]`` in the authors' ``defensive_models.py``): 3×3 convolutions with
sigmoid activations and "same" padding, an average pool and a nearest-neighbour upsampling:

    Conv(c→w)+σ, AvgPool2, Conv(w→w)+σ | Conv(w→w)+σ, Upsample×2, Conv(w→w)+σ, Conv(w→c)+σ

with ``w = width`` (MagNet used 3 filters on MNIST; 16 by default here, for RGB and larger
images). The output is in (0, 1). It is trained to reconstruct ``x`` from
``clamp(x + N(0, noise²), 0, 1)`` with MSE (MagNet's "noise volume" 0.1). MagNet's tiny L2
activity regularisation (1e-9) is left out. Only the auto-encoder is trained; the classifier
behind it (``ctx.base()``) is frozen. MagNet's detector half is not part of this defense.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from medbench.api import DefendedModel, Defense, DefenseContext
from medbench_dcnn.denoising import denoised_rows, denoiser_of, train_denoiser, wrap_base


def _conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.Sigmoid())


class MagNetAutoEncoder(nn.Module):
    """MagNet's MNIST auto-encoder with ``width`` filters per layer, on [0, 1] images.

    Args:
        channels: Image channels.
        width: Filters of the hidden convolutions.
    """

    def __init__(self, channels: int, width: int = 16) -> None:
        super().__init__()
        # ceil_mode: odd sizes keep their last row/column, like Keras' "same" pooling
        self.encoder = nn.Sequential(
            _conv(channels, width), nn.AvgPool2d(2, ceil_mode=True), _conv(width, width)
        )
        self.bottleneck = _conv(width, width)
        self.decoder = nn.Sequential(_conv(width, width), _conv(width, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bottleneck(self.encoder(x))
        # nearest ×2 upsampling, resized to the input so that odd sizes come out right
        h = F.interpolate(h, size=x.shape[-2:], mode="nearest")
        return self.decoder(h)


class Reformer(Defense):
    """Preprocessing defense: ``classifier(autoencoder(x))``, the auto-encoder trained to denoise."""

    name = "reformer"
    description = "MagNet reformer: denoising auto-encoder (sigmoid, width 16, noise 0.1) before the model"
    kind = "preprocessing"

    @dataclass(frozen=True)
    class Settings:
        """Reformer settings.

        Attributes:
            width: Filters of the auto-encoder's hidden convolutions (MagNet's MNIST used 3).
            noise: Std of the Gaussian training noise on the [0, 1] scale (MagNet's noise volume).
            epochs: Training epochs of the auto-encoder, independent of the run's (the
                classifier's): a sigmoid auto-encoder needs many passes (MagNet trains for 100+
                epochs) and is cheap to train. 0 uses the run's epochs.
        """

        width: int = 16
        noise: float = 0.1
        epochs: int = 30

        def validate(self) -> None:
            if self.width < 1:
                raise ValueError(f"width must be >= 1, got {self.width}")
            if self.noise < 0:
                raise ValueError(f"noise must be >= 0, got {self.noise}")
            if self.epochs < 0:
                raise ValueError(f"epochs must be >= 0, got {self.epochs}")

    def build(self, ctx: DefenseContext) -> DefendedModel:
        base = ctx.base()
        autoencoder = MagNetAutoEncoder(ctx.dataset.in_channels, self.settings.width)
        return wrap_base(base, "reformer", autoencoder, ctx.device)

    def fit(self, defended: DefendedModel, ctx: DefenseContext) -> None:
        autoencoder = denoiser_of(defended)
        generator = torch.Generator(device=ctx.device).manual_seed(ctx.seed)
        noise = self.settings.noise

        def loss(_defended: DefendedModel, x: torch.Tensor, _y: torch.Tensor) -> torch.Tensor:
            gaussian = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            return F.mse_loss(autoencoder((x + noise * gaussian).clamp(0.0, 1.0)), x)

        train_denoiser(ctx, defended, loss, epochs=self.settings.epochs or None)

    def visualize(self, defended: DefendedModel, x: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        """The clean inputs and what the auto-encoder makes of them."""
        return denoised_rows(defended, x, "reformer")
