"""VAFT and VAFT-FR: adversarial training on VAFA examples (paper 003, §2.3).

* ``vaft`` (the paper's M_VAFA, the reference's ``train_epoch``): each batch is replaced by its
  VAFA example, crafted with the model in eval mode, and the model trains on Dice+CE of those.
* ``vaft-fr`` (the reference's ``train_epoch_freq_reg``): Dice+CE on the clean batch, plus
  Dice+CE on its VAFA example, plus the frequency consistency loss L_fr between the 3D DCT of
  the logits on both. The paper writes L_fr as an L1 norm (``fr_loss=l1``, taken here as the
  mean absolute difference so that it is on the scale of the other terms); the reference code
  divides the summed absolute difference by the summed magnitude of the clean logits' DCT
  (``fr_loss=normalized-l1``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from medbench.api import SEGMENTATION, DefendedModel, Defense, DefenseContext
from medbench.api.toolkit import dice_ce_loss
from medbench_vafa.dct import dct_3d
from medbench_vafa.vafa import VAFAConfig, vafa


@dataclass(frozen=True)
class VAFTSettings:
    """How the training examples are crafted.

    Attributes:
        q_max: VAFA budget during training (20 for Synapse in the paper; 10 for ACDC).
        block_size: DCT block side (32, the paper's adversarial-training setting).
        steps: VAFA steps per batch (20).
        variant: VAFA ``paper`` or ``code`` version.
        ssim_loss: VAFA's SSIM term.
    """

    q_max: float = 20.0
    block_size: int = 32
    steps: int = 20
    variant: Literal["paper", "code"] = "paper"
    ssim_loss: bool = True

    def validate(self) -> None:
        if self.q_max < 1:
            raise ValueError("q_max must be >= 1")
        if self.block_size < 1 or self.steps < 1:
            raise ValueError("block_size and steps must be >= 1")

    def config(self) -> VAFAConfig:
        block = (self.block_size,) * 3
        return VAFAConfig(
            q_max=self.q_max, steps=self.steps, block=block, variant=self.variant, ssim_loss=self.ssim_loss
        )


def vafa_examples(
    ctx: DefenseContext, defended: DefendedModel, x: torch.Tensor, y: torch.Tensor, config: VAFAConfig
) -> torch.Tensor:
    """VAFA examples of a training batch against the model in its current state, in eval mode."""
    training = defended.model.training
    defended.eval()

    def gradient(x_adv: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x_adv = x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(dice_ce_loss(ctx.logits(defended, x_adv), labels), x_adv)
        return grad

    try:
        return vafa(gradient, x, y, config).x_adv
    finally:
        defended.model.train(training)


class VAFT(Defense):
    """Adversarial training on VAFA examples only (Dice+CE)."""

    name = "vaft"
    description = "VAFA adversarial training: Dice+CE on VAFA examples (q_max 20, 32³ blocks; paper 003)"
    kind = "training"
    tasks = SEGMENTATION
    Settings = VAFTSettings

    def build(self, ctx: DefenseContext) -> DefendedModel:
        return ctx.new_model()

    def fit(self, defended: DefendedModel, ctx: DefenseContext) -> None:
        config = self.settings.config()
        ctx.train(defended, perturb=lambda model, x, y: vafa_examples(ctx, model, x, y, config))


@dataclass(frozen=True)
class VAFTFRSettings(VAFTSettings):
    """VAFT-FR settings.

    Attributes:
        fr_loss: ``l1`` (the paper's Eq. 4, as a mean) or ``normalized-l1`` (the reference code).
        fr_weight: Weight of L_fr (1, as both).
    """

    fr_loss: Literal["l1", "normalized-l1"] = "l1"
    fr_weight: float = 1.0

    def validate(self) -> None:
        super().validate()
        if self.fr_weight < 0:
            raise ValueError("fr_weight must be >= 0")


def frequency_consistency(clean_logits: torch.Tensor, adv_logits: torch.Tensor, kind: str) -> torch.Tensor:
    """L_fr between the orthonormal 3D DCTs of two logit volumes ``(N, K, D, H, W)``."""
    clean_spectrum = dct_3d(clean_logits)
    difference = (clean_spectrum - dct_3d(adv_logits)).abs()
    if kind == "l1":
        return difference.mean()
    return difference.sum() / clean_spectrum.abs().sum().clamp_min(1e-12)


class VAFTFR(VAFT):
    """VAFT with frequency regularisation: clean and VAFA Dice+CE plus L_fr on the logits' 3D DCT."""

    name = "vaft-fr"
    description = "VAFT + frequency consistency loss on the 3D DCT of the logits (paper 003's VAFT-FR)"
    Settings = VAFTFRSettings

    def fit(self, defended: DefendedModel, ctx: DefenseContext) -> None:
        s: VAFTFRSettings = self.settings
        config = s.config()

        def loss(model: DefendedModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            x_adv = vafa_examples(ctx, model, x, y, config)
            clean_logits = ctx.logits(model, x)
            adv_logits = ctx.logits(model, x_adv)
            return (
                dice_ce_loss(clean_logits, y)
                + dice_ce_loss(adv_logits, y)
                + s.fr_weight * frequency_consistency(clean_logits, adv_logits, s.fr_loss)
            )

        ctx.train(defended, loss=loss)
