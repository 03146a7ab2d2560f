"""The medbench attacks ``vafa`` and ``vafa-2d`` (budget ``q_max``), on the segmentation estimator."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from medbench.api import SEGMENTATION, Attack
from medbench_vafa.art_attack import VAFA, VAFA2D


@dataclass(frozen=True)
class VAFASettings:
    """VAFA settings (the budget ``q_max`` is given per cell).

    Attributes:
        steps: Sign steps on the quantization tables (20, as the paper and the reference).
        block_size: Side of the cubic DCT blocks (8); the patch side must be a multiple.
        variant: ``paper`` (Algorithm 1: q from 1, clipped to [1, q_max]) or ``code`` (the
            reference code: q from q_max, clipped to [q_min, q_max]); see docs/segmentation.md.
        q_min: Lower clip of the ``code`` variant (5).
        ssim_loss: Subtract the block-wise SSIM loss (the reference README's ``--use_ssim_loss``).
        renormalize: Per-slice min–max renormalisation of the result, as the reference.
    """

    steps: int = 20
    block_size: int = 8
    variant: Literal["paper", "code"] = "paper"
    q_min: float = 5.0
    ssim_loss: bool = True
    renormalize: bool = True

    def validate(self) -> None:
        if self.steps < 1:
            raise ValueError("steps must be >= 1")
        if self.block_size < 1:
            raise ValueError("block_size must be >= 1")
        if self.q_min < 1:
            raise ValueError("q_min must be >= 1")


class VAFAAttack(Attack):
    """VAFA on 3D DCT blocks: quantization tables pushed to raise Dice+CE, kept similar by SSIM."""

    name = "vafa"
    description = "Volumetric adversarial frequency attack: learnable 3D-DCT quantization (paper 003)"
    threat_model = "frequency"
    budget_name = "q_max"
    default_budgets = (20.0, 30.0)
    budget_on_intensity_scale = False
    tasks = SEGMENTATION
    Settings = VAFASettings
    art_class: type[VAFA] = VAFA
    dims = 3

    def generate(
        self, estimator: Any, x: torch.Tensor, y: torch.Tensor, budget: float, *, seed: int
    ) -> torch.Tensor:
        s = self.settings
        attack = self.art_class(
            estimator,
            q_max=budget,
            steps=s.steps,
            block_size=(s.block_size,) * self.dims,
            variant=s.variant,
            q_min=s.q_min,
            ssim_loss=s.ssim_loss,
            renormalize=s.renormalize,
            batch_size=max(len(x), 1),
        )
        return attack.generate_tensor(x, y)


@dataclass(frozen=True)
class VAFA2DSettings(VAFASettings):
    """VAFA-2D settings: the reference's class defaults (10 steps, no SSIM term)."""

    steps: int = 10
    ssim_loss: bool = False


class VAFA2DAttack(VAFAAttack):
    """VAFA with a 2D DCT on blocks of each axial slice."""

    name = "vafa-2d"
    description = "Slice-wise VAFA: learnable 2D-DCT quantization on each axial slice (paper 003)"
    Settings = VAFA2DSettings
    art_class = VAFA2D
    dims = 2
