"""VAFA: the volumetric adversarial frequency attack (Hanif et al., MICCAI 2023), as tensors.

The attack quantizes the block-wise DCT of the volume with a learnable quantization table per
block and per sample: ``X' = IDCT(round(DCT(X) / q) · q)``. Rounding is made differentiable with
a tanh approximation whose sharpness grows over the steps (:func:`soft_round`, α from 0.1 down to
~0), and ``q`` is pushed by sign steps to *raise* the segmentation loss (Dice+CE) while keeping
the volume structurally similar (an SSIM term). Larger entries of ``q`` drop more of a block's
frequency content; ``q_max`` bounds them and is the attack's budget.

Two versions exist, and both are offered (``variant``):

* ``paper`` (default, Algorithm 1 of the paper): ``q`` starts at 1 (no quantization), is
  clipped to ``[1, q_max]``, and the returned volume is quantized with the final ``q`` and exact
  rounding (the soft rounding only serves the gradients).
* ``code`` (asif-hanif/vafa@83bdd07): ``q`` starts at ``q_max``, is clipped to
  ``[q_min, q_max]`` (``q_min=5``), and the returned volume is the last step's soft-rounded one,
  computed *before* the final update of ``q``.

Both work on ``(B, 1, D, H, W)`` volumes in [0, 1] on the 0–255 scale inside (``x·255 − 128``, as
JPEG and the reference), and renormalise each axial slice of the result to [0, 1] by its min and
max, as the reference does; a constant slice (zero range, where the reference divides 0 by 0)
keeps its value divided by 255 instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from medbench_vafa.block_ssim import vafa_ssim_loss
from medbench_vafa.dct import block_merge, block_split, dct, idct
from medbench_vafa.quantization import alpha_schedule, soft_round

Variant = Literal["paper", "code"]
GradientFn = Callable[[Tensor, Tensor], Tensor]
"""``(x_adv, y) -> ∂ loss / ∂ x_adv``: the segmentation loss's gradient at the adversarial input."""

CONSTANT_SLICE_RANGE = 1e-2
"""A slice whose max − min (on the 0–255 scale) is below this is treated as constant: float32
round-off of the DCT leaves ~1e-5 of ripple on a flat slice, which min–max renormalisation
would otherwise stretch to the full [0, 1] range."""


@dataclass(frozen=True)
class VAFAConfig:
    """Parameters of one VAFA run.

    Attributes:
        q_max: Largest quantization step (the budget; 20 or 30 in the paper).
        steps: Sign steps on ``q`` (20 in the paper and the reference's 3D attack).
        block: Block size, 3 sides for VAFA or 2 for the slice-wise VAFA-2D.
        variant: ``paper`` or ``code`` (see the module notes).
        q_min: Lower clip of ``q`` in the ``code`` variant (5); the paper clips at 1.
        ssim_loss: Subtract the block-wise SSIM loss from the objective (3D only; the reference
            README turns it on).
        renormalize: Min–max renormalise each axial slice of the result (the reference does);
            False divides by 255 and clips instead.
    """

    q_max: float = 20.0
    steps: int = 20
    block: tuple[int, ...] = (8, 8, 8)
    variant: Variant = "paper"
    q_min: float = 5.0
    ssim_loss: bool = True
    renormalize: bool = True

    def __post_init__(self) -> None:
        if len(self.block) not in (2, 3) or min(self.block) < 1:
            raise ValueError(f"block must have 2 or 3 positive sides, got {self.block}")
        if self.steps < 1:
            raise ValueError("steps must be >= 1")
        if self.q_max < 1:
            raise ValueError(f"q_max must be >= 1, got {self.q_max}")
        if self.variant == "code" and not 1 <= self.q_min <= self.q_max:
            raise ValueError(f"q_min must be in [1, q_max={self.q_max}], got {self.q_min}")
        if self.variant not in ("paper", "code"):
            raise ValueError(f"variant must be 'paper' or 'code', got {self.variant!r}")

    @property
    def bounds(self) -> tuple[float, float]:
        """The clip range of ``q``."""
        return (1.0, self.q_max) if self.variant == "paper" else (self.q_min, self.q_max)

    @property
    def q_init(self) -> float:
        return 1.0 if self.variant == "paper" else self.q_max


def forward_transform(x: Tensor, block: tuple[int, ...]) -> Tensor:
    """Block-wise orthonormal DCT of ``x·255 − 128``.

    3D blocks tile ``(D, H, W)``: ``(B, 1, N, bd, bh, bw)``; 2D blocks tile each axial slice:
    ``(B, 1, D, N, bh, bw)``.
    """
    if x.ndim != 5 or x.shape[1] != 1:
        raise ValueError(f"VAFA takes volumes (B, 1, D, H, W), got shape {tuple(x.shape)}")
    blocks = block_split(x * 255.0 - 128.0, block)
    return dct(blocks, list(range(-len(block), 0)))


def reconstruct(
    coefficients: Tensor,
    q: Tensor,
    spatial: tuple[int, ...],
    block_ndim: int,
    alpha: float | None,
    renormalize: bool,
) -> Tensor:
    """Quantize, dequantize and invert: the adversarial volume ``(B, 1, D, H, W)`` in [0, 1].

    Args:
        coefficients: Output of :func:`forward_transform`.
        q: Quantization tables, same shape.
        spatial: The volume's ``(D, H, W)``.
        block_ndim: 3 for VAFA, 2 for the slice-wise VAFA-2D.
        alpha: Soft-rounding parameter; None rounds exactly.
        renormalize: Min–max renormalise each axial slice (see the module notes).
    """
    scaled = coefficients / q
    rounded = torch.round(scaled) if alpha is None else soft_round(scaled, alpha)
    pixels = idct(rounded * q, list(range(-block_ndim, 0))) + 128.0
    return to_unit_range(block_merge(pixels, spatial[-block_ndim:]), renormalize)


def to_unit_range(volume: Tensor, renormalize: bool) -> Tensor:
    """Back from the 0–255 scale: per-slice min–max (the reference) or ``/255``; then clip."""
    if not renormalize:
        return (volume / 255.0).clamp(0.0, 1.0)
    low = volume.amin(dim=(-2, -1), keepdim=True)
    high = volume.amax(dim=(-2, -1), keepdim=True)
    spread = high - low
    constant = spread < CONSTANT_SLICE_RANGE
    normalised = (volume - low) / torch.where(constant, torch.ones_like(spread), spread)
    return torch.where(constant, volume / 255.0, normalised).clamp(0.0, 1.0)


@dataclass
class VAFAResult:
    """The adversarial volumes and the final quantization tables."""

    x_adv: Tensor
    q: Tensor


def vafa(
    gradient: GradientFn,
    x: Tensor,
    y: Tensor,
    config: VAFAConfig,
    on_step: Callable[[Tensor], None] | None = None,
) -> VAFAResult:
    """Run VAFA on a batch.

    Args:
        gradient: ``(x_adv, y) -> ∂L/∂x_adv`` of the segmentation loss (Dice+CE) to raise;
            called once per step on a detached input.
        x: Clean volumes ``(B, 1, D, H, W)`` in [0, 1]; each side a multiple of the block's.
        y: Their label maps ``(B, D, H, W)``.
        config: The attack's parameters.
        on_step: Called with the tables after each update (diagnostics, tests).

    Returns:
        Adversarial volumes in [0, 1] (no NaN, also for constant slices) and the final ``q``.
    """
    x = x.detach()
    block = tuple(config.block)
    spatial = tuple(x.shape[2:])
    coefficients = forward_transform(x, block)
    low, high = config.bounds
    q = torch.full_like(coefficients, config.q_init)
    x_adv = x
    use_ssim = config.ssim_loss and len(block) == 3
    for alpha in alpha_schedule(config.steps):
        q.requires_grad_(True)
        x_adv = reconstruct(coefficients, q, spatial, len(block), alpha, config.renormalize)
        loss_gradient = gradient(x_adv.detach(), y).to(x_adv.dtype)
        # d L(model(x_adv)) / d q = J^T (dL/dx_adv): backpropagate the model's input gradient
        objective = (x_adv * loss_gradient).sum()
        if use_ssim:
            objective = objective - vafa_ssim_loss(x, x_adv, block)  # type: ignore[arg-type]
        (q_gradient,) = torch.autograd.grad(objective, q)
        with torch.no_grad():
            q = (q + q_gradient.sign()).clamp(low, high)
        if on_step is not None:
            on_step(q)
        x_adv = x_adv.detach()
    if config.variant == "paper":
        with torch.no_grad():
            x_adv = reconstruct(coefficients, q, spatial, len(block), None, config.renormalize)
    return VAFAResult(x_adv.detach(), q.detach())
