"""Defense ``hgd``: the high-level representation guided denoiser (Liao et al., CVPR 2018).

The denoiser is a compact U-Net (two downsamplings instead of the paper's DUNET with four,
blocks of two conv-BN-ReLU layers, bilinear upsampling and skip concatenation) that predicts
the adversarial noise: ``x̂ = x − d(x)``. Its last 1×1 convolution starts at zero, so the
untrained denoiser is the identity and training starts from the base model's accuracy. The
output is not clamped to [0, 1] (as in the paper), which keeps the gradients exact.

Training uses the logits guided loss (LGD): ``mean_i ‖f(x̂_i) − f(x_i)‖₁`` with ``f`` the
frozen base classifier's logits, the clean logits detached, and ``x̂`` the denoised
adversarial input. The adversarial inputs are crafted against the frozen base classifier
(without the denoiser) at every batch with a short L∞ PGD (``train_steps`` steps of
``2.5·train_eps/train_steps`` from a random start). The paper trained on a fixed set of
FGSM / I-FGSM examples with ε up to 16/255 from several models; a per-batch PGD at 8/255
is the closer fit to a white-box benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from medbench.api import DefendedModel, Defense, DefenseContext
from medbench.api.toolkit import pgd_linf
from medbench_dcnn.denoising import denoised_rows, denoiser_of, train_denoiser, without_denoiser, wrap_base


def _block(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _upsampled_like(h: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    return F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)


class UNetDenoiser(nn.Module):
    """A compact U-Net predicting the noise of its input; ``forward`` returns ``x − noise(x)``.

    Args:
        channels: Image channels.
        width: Channels of the first level (doubled at each of the two downsamplings).
    """

    def __init__(self, channels: int, width: int = 32) -> None:
        super().__init__()
        self.enc1 = _block(channels, width)
        self.enc2 = _block(width, 2 * width, stride=2)
        self.enc3 = _block(2 * width, 4 * width, stride=2)
        self.dec2 = _block(4 * width + 2 * width, 2 * width)
        self.dec1 = _block(2 * width + width, width)
        self.out = nn.Conv2d(width, channels, 1, bias=False)
        nn.init.zeros_(self.out.weight)

    def noise(self, x: torch.Tensor) -> torch.Tensor:
        """The predicted noise ``d(x)``."""
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        d2 = self.dec2(torch.cat([_upsampled_like(e3, e2), e2], dim=1))
        d1 = self.dec1(torch.cat([_upsampled_like(d2, e1), e1], dim=1))
        return self.out(d1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.noise(x)


class HGD(Defense):
    """Preprocessing defense: ``classifier(x − d(x))``, the denoiser trained with the LGD loss."""

    name = "hgd"
    description = "high-level guided denoiser (Liao et al. 2018): U-Net, LGD loss on PGD ε=8/255 inputs"
    kind = "preprocessing"

    @dataclass(frozen=True)
    class Settings:
        """HGD settings.

        Attributes:
            width: Channels of the U-Net's first level.
            train_eps: L∞ budget of the training adversarial inputs on the [0, 1] scale.
            train_steps: PGD steps per training batch.
        """

        width: int = 32
        train_eps: float = 8 / 255
        train_steps: int = 2

        def validate(self) -> None:
            if self.width < 1:
                raise ValueError(f"width must be >= 1, got {self.width}")
            if not 0 <= self.train_eps <= 1:
                raise ValueError(f"train_eps must be in [0, 1], got {self.train_eps}")
            if self.train_steps < 1:
                raise ValueError(f"train_steps must be >= 1, got {self.train_steps}")

    def build(self, ctx: DefenseContext) -> DefendedModel:
        base = ctx.base()
        denoiser = UNetDenoiser(ctx.dataset.in_channels, self.settings.width)
        return wrap_base(base, "hgd", denoiser, ctx.device)

    def fit(self, defended: DefendedModel, ctx: DefenseContext) -> None:
        settings = self.settings
        denoiser = denoiser_of(defended)
        base = without_denoiser(defended)
        generator = torch.Generator(device=ctx.device).manual_seed(ctx.seed)

        def base_logits(z: torch.Tensor) -> torch.Tensor:
            return ctx.logits(base, z)

        def loss(_defended: DefendedModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            x_adv = pgd_linf(
                base_logits,
                x,
                y,
                eps=settings.train_eps,
                eps_step=2.5 * settings.train_eps / settings.train_steps,
                steps=settings.train_steps,
                random_start=True,
                generator=generator,
            )
            with torch.no_grad():
                target = base_logits(x)
            return lgd_loss(base_logits(denoiser(x_adv)), target)

        train_denoiser(ctx, defended, loss)

    def visualize(self, defended: DefendedModel, x: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        """The clean inputs and what the denoiser makes of them."""
        return denoised_rows(defended, x, "hgd")


def lgd_loss(denoised_logits: torch.Tensor, clean_logits: torch.Tensor) -> torch.Tensor:
    """HGD's logits guided loss: per-sample L1 distance of the logits, averaged over the batch."""
    return (denoised_logits - clean_logits.detach()).abs().sum(dim=1).mean()
