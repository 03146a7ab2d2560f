"""Defenses ``tc`` and ``tc-glcm``: domain assimilation with texture and color modules.

Chen & Luo 2024 (paper 000, §4): a texture module T and a color module C in front of a
backbone B with its classifier F, trained end to end on
``α · CE(F(B(C(T(X)))), y) + (1 − α) · GLCMLoss(C(T(X)), X)`` with α = 0.98 (eq. 18).
``tc`` is the same network trained on cross-entropy alone (the paper's "TC" row).

The backbone is the matrix's model plugin built for 3 input channels (``--weights
imagenet`` loads its ImageNet weights from the local cache, as the paper fine-tunes
ImageNet-pretrained ResNet18/50 and DenseNet121). The paper trains with lr 1e-4 for up to
300 epochs with early stopping; medbench uses the run's training settings for every
defense, so that rows of one matrix are comparable.

In eq. 18 the GLCM term is written ``GLCMLoss(C(X, θ_C), X)``; since C's input is T's
output, medbench compares the colorized image that actually enters the backbone,
``C(T(X))``, with ``X``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medbench.api import DefendedModel, Defense, DefenseContext
from medbench.api.toolkit import default_loss, normalize
from medbench_tcglcm.loss import glcm_loss
from medbench_tcglcm.modules import ColorModule, TextureColorNetwork, TextureModule


def _check_widths(texture_width: int, color_width: int) -> None:
    if texture_width < 1 or color_width < 1:
        raise ValueError("texture_width and color_width must be >= 1")


class TextureColor(Defense):
    """Defense ``tc``: texture and color modules trained end to end with the backbone (CE only)."""

    name = "tc"
    description = "Texture + color modules before the backbone, trained end to end (Chen & Luo 2024)"
    kind = "training"

    @dataclass(frozen=True)
    class Settings:
        """Settings of ``tc``.

        Attributes:
            texture_width: Channels of the texture module's first stage (the second has twice).
            color_width: Channels of the color module.
        """

        texture_width: int = 16
        color_width: int = 16

        def validate(self) -> None:
            _check_widths(self.texture_width, self.color_width)

    def build(self, ctx: DefenseContext) -> DefendedModel:
        backbone = ctx.new_model(in_channels=3)
        network = TextureColorNetwork(
            TextureModule(ctx.dataset.in_channels, self.settings.texture_width),
            ColorModule(1, self.settings.color_width),
            backbone.model,
            backbone.normalization,
        )
        return DefendedModel(network.to(ctx.device), ctx.normalization())

    def fit(self, defended: DefendedModel, ctx: DefenseContext) -> None:
        ctx.train(defended)

    def visualize(self, defended: DefendedModel, x: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        """Input, texture-module output and colorized image (paper 000, Fig. 2 and Fig. 4)."""
        network: TextureColorNetwork = defended.model  # type: ignore[assignment]
        textured, colorized = network.colorize(normalize(x, defended.normalization))
        return {"texture-color": [x, textured, colorized]}


class TextureColorGLCM(TextureColor):
    """Defense ``tc-glcm``: ``tc`` plus the GLCM loss, which keeps the colorized texture close to X's."""

    name = "tc-glcm"
    description = "Texture + color modules with the GLCM texture-preservation loss, α=0.98 (Chen & Luo 2024)"

    @dataclass(frozen=True)
    class Settings:
        """Settings of ``tc-glcm``.

        Attributes:
            alpha: Weight of cross-entropy; the GLCM loss gets ``1 − alpha`` (0.98, the paper's).
            levels: Grey levels of the soft GLCM (32: the co-occurrence costs ``levels²`` per pixel).
            distance: Co-occurrence distance in pixels (3, the paper's).
            sigma: Width of the Gaussian soft binning on the [0, 1] scale; 0 means half a bin.
            texture_width: Channels of the texture module's first stage.
            color_width: Channels of the color module.
        """

        alpha: float = 0.98
        levels: int = 32
        distance: int = 3
        sigma: float = 0.0
        texture_width: int = 16
        color_width: int = 16

        def validate(self) -> None:
            if not 0 <= self.alpha <= 1:
                raise ValueError("alpha must be in [0, 1]")
            if self.levels < 2:
                raise ValueError("levels must be >= 2")
            if self.distance < 1:
                raise ValueError("distance must be >= 1")
            if self.sigma < 0:
                raise ValueError("sigma must be >= 0")
            _check_widths(self.texture_width, self.color_width)

    def fit(self, defended: DefendedModel, ctx: DefenseContext) -> None:
        settings = self.settings
        criterion = default_loss(ctx.dataset)

        def loss(model: DefendedModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            network: TextureColorNetwork = model.model  # type: ignore[assignment]
            _, colorized = network.colorize(normalize(x, model.normalization))
            classification = criterion(network.classify(colorized), y)
            texture = glcm_loss(
                colorized,
                x,
                levels=settings.levels,
                distance=settings.distance,
                sigma=settings.sigma or None,
            )
            return settings.alpha * classification + (1 - settings.alpha) * texture

        ctx.train(defended, loss=loss)
