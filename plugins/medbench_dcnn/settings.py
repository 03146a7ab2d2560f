"""Settings of the denoising-CNN defense ``dcnn``."""

from __future__ import annotations

from dataclasses import dataclass

VARIANTS = ("paper", "code")


@dataclass(frozen=True)
class DCNNSettings:
    """Settings of the denoising CNN (Xue et al. 2019): ``L = L_c + λ_n·L_n + λ_a·L_a``.

    Attributes:
        lambda_n: Weight λ_n of the neighbor loss L_n (paper: 1, chosen from {0.1, 1, 10};
            code default k1 = 1).
        lambda_a: Weight λ_a of the embedded auto-encoder's reconstruction loss L_a (paper:
            10, chosen from {0.1, 1, 10}; code default k2 = 10).
        sigma: Half-width of the uniform pixel noise U(−σ, σ) on the [0, 1] scale; noisy
            images are clamped to [0, 1]. The paper gives no value; 0.2 is the code's default
            noise level.
        noisy_copies: Noisy copies of every training image per batch (the code's ``nrate``, 3).
        variant: ``paper`` (L_n = mean L2 distance of eq. 1 with gradients through both
            features; L_a = per-sample L2 norm of eq. 2 for the clean and the noisy inputs) or
            ``code`` (L_n = MSE to the detached clean features; L_a = MSE on the noisy inputs only).
        tap: Dotted path of the module whose output the decoder reads; empty picks the first
            residual stage of ResNet, DenseNet and VGG models automatically.
    """

    lambda_n: float = 1.0
    lambda_a: float = 10.0
    sigma: float = 0.2
    noisy_copies: int = 3
    variant: str = "paper"
    tap: str = ""

    def validate(self) -> None:
        if self.lambda_n < 0 or self.lambda_a < 0:
            raise ValueError("lambda_n and lambda_a must be >= 0")
        if not 0 <= self.sigma <= 1:
            raise ValueError(f"sigma must be in [0, 1], got {self.sigma}")
        if self.noisy_copies < 1:
            raise ValueError(f"noisy_copies must be >= 1, got {self.noisy_copies}")
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
