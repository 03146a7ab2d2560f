"""The training loss of the denoising CNN: ``L = L_c + λ_n·L_n + λ_a·L_a`` (Xue et al. 2019, eq. 3).

For a batch ``x`` of N clean images and K noisy copies ``x'_k = clamp(x + U(−σ, σ), 0, 1)``:

* ``L_c``: the classification loss (cross-entropy) on ``cat([x, x'_1..x'_K])`` with the
  labels repeated (paper and code).
* ``L_n`` (neighbor loss), with ``f`` the input of the classification head (the paper's
  "output of the final convolutional layer": globally pooled for ResNet and DenseNet, the
  flattened 7×7 pool for VGG):
  paper (eq. 1) ``mean_{i,k} ‖f(x_i) − f(x'_ik)‖₂``, gradients through both sides;
  code ``MSE(f(x'), f(x).detach())``.
* ``L_a`` (embedded auto-encoder), with ``x̂ = decoder(tap(x))`` in (−1, 1) and target ``2x − 1``:
  paper (eq. 2) ``mean_i ‖t_i − x̂_i‖₂ + mean_{i,k} ‖t_i − x̂'_ik‖₂`` (the noisy term averaged
  over the K copies, so that its weight does not grow with K); code ``MSE(x̂', t)`` on the
  noisy copies only.

The paper variant's L2 norms grow with the square root of the number of pixels (and of
features), whereas the code's MSE does not: at 224×224 the same λ_a weighs the
reconstruction far more in the paper variant than in the code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from medbench.api import DefendedModel
from medbench.api.toolkit import Criterion, defended_logits
from medbench_dcnn.decoder import Decoder
from medbench_dcnn.settings import DCNNSettings
from medbench_dcnn.taps import capture

Logits = Callable[[DefendedModel, torch.Tensor], torch.Tensor]


def uniform_noisy(
    x: torch.Tensor, sigma: float, copies: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``copies`` noisy versions of ``x``: ``clamp(x + U(−σ, σ), 0, 1)``, shape ``(copies, *x.shape)``."""
    noise = torch.rand((copies, *x.shape), generator=generator, device=x.device, dtype=x.dtype)
    return (x.unsqueeze(0) + (2 * noise - 1) * sigma).clamp(0.0, 1.0)


@dataclass
class LossTerms:
    """The three terms of eq. 3 and their weighted sum (all scalars)."""

    total: torch.Tensor
    classification: torch.Tensor
    neighbor: torch.Tensor
    reconstruction: torch.Tensor


class DCNNLoss:
    """The loss ``(defended, x, y) -> scalar`` given to the harness's training loop.

    Args:
        settings: λ_n, λ_a, σ, K and the paper/code variant.
        tap: The module whose output the decoder reads.
        head: The classification head; its input is the feature vector ``f``.
        decoder: The embedded auto-encoder's decoder.
        criterion: The classification loss (cross-entropy, or BCE for multi-label data).
        logits: Differentiable forward pass from [0, 1] input (the context's ``logits``).
        generator: Random generator of the noise, on the data's device.
    """

    def __init__(
        self,
        settings: DCNNSettings,
        *,
        tap: nn.Module,
        head: nn.Module,
        decoder: Decoder,
        criterion: Criterion,
        logits: Logits = defended_logits,
        generator: torch.Generator | None = None,
    ) -> None:
        self.settings = settings
        self.tap = tap
        self.head = head
        self.decoder = decoder
        self.criterion = criterion
        self.logits = logits
        self.generator = generator

    def __call__(self, defended: DefendedModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        noisy = uniform_noisy(x, self.settings.sigma, self.settings.noisy_copies, self.generator)
        return self.terms(defended, x, y, noisy).total

    def terms(
        self, defended: DefendedModel, x: torch.Tensor, y: torch.Tensor, noisy: torch.Tensor
    ) -> LossTerms:
        """The loss terms for clean ``x`` (N, C, H, W) and its noisy copies ``noisy`` (K, N, C, H, W).

        A term whose λ is 0 is not computed (reported as 0).
        """
        settings = self.settings
        n, copies = x.shape[0], noisy.shape[0]
        batch = torch.cat([x, noisy.flatten(0, 1)])
        with capture(self.tap, self.head) as captured:
            logits = self.logits(defended, batch)
        labels = y.repeat((copies + 1,) + (1,) * (y.ndim - 1))
        classification = self.criterion(logits, labels)
        zero = classification.new_zeros(())
        neighbor = reconstruction = zero
        if settings.lambda_n > 0:
            assert captured.features is not None, "the classification head was not called"
            neighbor = self._neighbor(captured.features.flatten(1), n, copies)
        if settings.lambda_a > 0:
            assert captured.tap is not None, "the tap module was not called"
            reconstruction = self._reconstruction(captured.tap, x, copies)
        total = classification + settings.lambda_n * neighbor + settings.lambda_a * reconstruction
        return LossTerms(total, classification, neighbor, reconstruction)

    def _neighbor(self, features: torch.Tensor, n: int, copies: int) -> torch.Tensor:
        clean = features[:n]
        noisy = features[n:].view(copies, n, -1)
        if self.settings.variant == "code":
            return F.mse_loss(noisy, clean.detach().unsqueeze(0).expand_as(noisy))
        return torch.linalg.vector_norm(noisy - clean.unsqueeze(0), dim=2).mean()

    def _reconstruction(self, code: torch.Tensor, x: torch.Tensor, copies: int) -> torch.Tensor:
        n = x.shape[0]
        size = (int(x.shape[-2]), int(x.shape[-1]))
        target = 2 * x - 1
        if self.settings.variant == "code":
            decoded = self.decoder(code[n:], size).view(copies, *x.shape)
            return F.mse_loss(decoded, target.unsqueeze(0).expand_as(decoded))
        decoded = self.decoder(code, size).view(copies + 1, n, -1)
        distances = torch.linalg.vector_norm(decoded - target.flatten(1).unsqueeze(0), dim=2)
        return distances[0].mean() + distances[1:].mean()
