"""Trainable pixel denoisers in front of a trained classifier (the ``reformer`` and ``hgd`` baselines).

A denoiser is an ``nn.Module`` from [0, 1] images to images. :func:`wrap_base` puts it in
front of ``ctx.base()`` as an ART ``PreprocessorPyTorch`` and keeps the module in
``DefendedModel.modules`` so that its weights are cached. The denoisers are differentiable,
so gradient attacks get exact gradients through them (no BPDA).

:func:`train_denoiser` trains only the denoiser: the harness's training loop, given the
denoiser's parameters, leaves every other part frozen and in eval mode (the base
classifier's weights, BatchNorm statistics and dropout do not change).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from art.defences.preprocessor.preprocessor import PreprocessorPyTorch
from torch import nn

from medbench.api import DefendedModel, DefenseContext

LossFn = Callable[[DefendedModel, torch.Tensor, torch.Tensor], torch.Tensor]


class DenoiserPreprocessor(PreprocessorPyTorch):
    """Runs a denoiser module as an ART framework-native (differentiable) preprocessor.

    Args:
        denoiser: The module ``x -> denoised x``.
        device: Where the module lives.
    """

    def __init__(self, denoiser: nn.Module, device: torch.device) -> None:
        super().__init__(
            device_type="gpu" if device.type == "cuda" else "cpu", apply_fit=False, apply_predict=True
        )
        self.denoiser = denoiser

    def forward(self, x: torch.Tensor, y: Any = None) -> tuple[torch.Tensor, Any]:
        return self.denoiser(x), y


def wrap_base(base: DefendedModel, key: str, denoiser: nn.Module, device: torch.device) -> DefendedModel:
    """``base`` with ``denoiser`` as its first preprocessor, held in ``modules`` under ``key``.

    When ``key`` is taken (a chain with the same denoiser twice) a numbered key is used.
    """
    unique, number = key, 2
    while unique in base.modules:
        unique, number = f"{key}-{number}", number + 1
    preprocessors = [DenoiserPreprocessor(denoiser.to(device), device), *base.preprocessors]
    return DefendedModel(base.model, base.normalization, preprocessors, {**base.modules, unique: denoiser})


def denoiser_of(defended: DefendedModel) -> nn.Module:
    """The denoiser that :func:`wrap_base` put in front of the model."""
    first = defended.preprocessors[0] if defended.preprocessors else None
    if not isinstance(first, DenoiserPreprocessor):
        raise TypeError("the defended model has no denoiser in front")
    return first.denoiser


def without_denoiser(defended: DefendedModel) -> DefendedModel:
    """The base classifier (with its own preprocessors) that the denoiser protects."""
    return DefendedModel(defended.model, defended.normalization, list(defended.preprocessors[1:]))


def train_denoiser(
    ctx: DefenseContext, defended: DefendedModel, loss: LossFn, epochs: int | None = None
) -> None:
    """Train only the denoiser of ``defended`` with ``loss`` (for ``epochs``, default the run's);
    the base classifier stays as it is."""
    ctx.train(defended, loss=loss, parameters=list(denoiser_of(defended).parameters()), epochs=epochs)


def denoised_rows(defended: DefendedModel, x: torch.Tensor, name: str) -> dict[str, list[torch.Tensor]]:
    """``{name: [x, denoised x]}`` for :meth:`Defense.visualize` (clamped to [0, 1] for display)."""
    if x.shape[1] not in (1, 3):
        return {}
    return {name: [x, denoiser_of(defended)(x).clamp(0.0, 1.0)]}
