"""Defense ``gaussian-augmentation``: training on clean plus Gaussian-noised copies (Zantedeschi
et al., 2017; ART's ``GaussianAugmentation``), optionally with noise at inference too."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medbench.api import CLASSIFICATION, DefendedModel, Defense, DefenseContext
from medbench.api.toolkit import DefensePreprocessor, default_loss


class GaussianNoiseInput(DefensePreprocessor):
    """``clip(x + σ·N(0, 1), 0, 1)`` at prediction time: differentiable but randomised, so
    gradient attacks average over draws (EOT)."""

    differentiable = True
    randomized = True

    def __init__(self, sigma: float, device: torch.device) -> None:
        super().__init__(device)
        self.sigma = sigma

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.sigma * torch.randn_like(x)).clamp(0.0, 1.0)


def augment(
    x: torch.Tensor, y: torch.Tensor, sigma: float, ratio: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """ART's ``GaussianAugmentation(augmentation=True)`` on a batch: the batch followed by
    ``round(ratio · N)`` noisy copies of randomly chosen samples, clipped to [0, 1]."""
    count = round(ratio * x.shape[0])
    chosen = torch.randint(0, x.shape[0], (count,), generator=generator, device=x.device)
    noise = torch.randn((count, *x.shape[1:]), generator=generator, device=x.device, dtype=x.dtype)
    noisy = (x[chosen] + sigma * noise).clamp(0.0, 1.0)
    return torch.cat([x, noisy]), torch.cat([y, y[chosen]])


@dataclass(frozen=True)
class GaussianAugmentationSettings:
    """Gaussian-augmentation settings.

    Attributes:
        sigma: Noise standard deviation on the [0, 1] scale (8/255).
        ratio: Noisy copies per clean sample in each training batch (1, ART's default).
        at_inference: Also add the noise to every input at prediction time (ART's
            ``apply_predict``; off by default as in ART). The defense is then randomised and
            gradient attacks use EOT with the run's ``eot_samples``.
    """

    sigma: float = 8 / 255
    ratio: float = 1.0
    at_inference: bool = False

    def validate(self) -> None:
        if not 0 <= self.sigma <= 1:
            raise ValueError("sigma must be in [0, 1]")
        if not 0 < self.ratio <= 10:
            raise ValueError("ratio must be in (0, 10]")


class GaussianAugmentation(Defense):
    """Trains the model on each batch plus noisy copies of it."""

    name = "gaussian-augmentation"
    description = (
        "Training on clean + Gaussian-noised copies (ART GaussianAugmentation); noise at inference optional"
    )
    kind = "training"
    tasks = CLASSIFICATION
    Settings = GaussianAugmentationSettings

    def build(self, ctx: DefenseContext) -> DefendedModel:
        defended = ctx.new_model()
        if self.settings.at_inference:
            defended.preprocessors.insert(0, GaussianNoiseInput(self.settings.sigma, ctx.device))
        return defended

    def fit(self, defended: DefendedModel, ctx: DefenseContext) -> None:
        s: GaussianAugmentationSettings = self.settings
        generator = torch.Generator(device=ctx.device).manual_seed(ctx.seed)
        criterion = default_loss(ctx.dataset)
        # training sees the augmented batch, not the inference noise
        clean = DefendedModel(defended.model, defended.normalization)

        def loss(_: DefendedModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            x_all, y_all = augment(x, y, s.sigma, s.ratio, generator)
            return criterion(ctx.logits(clean, x_all), y_all)

        ctx.train(defended, loss=loss)
