"""The differentiable forward pass of a defended model from [0, 1] input."""

from __future__ import annotations

from functools import lru_cache

import torch

from medbench.api import DefendedModel, Normalization


@lru_cache(maxsize=64)
def mean_std(
    normalization: Normalization, ndim: int, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std as broadcastable tensors on ``device``.

    Cached, so that no attack or training step copies them from host memory again.
    """
    shape = (1, -1) + (1,) * (ndim - 2)
    mean = torch.tensor(normalization.mean, dtype=dtype, device=device).view(shape)
    std = torch.tensor(normalization.std, dtype=dtype, device=device).view(shape)
    return mean, std


def defended_logits(defended: DefendedModel, x: torch.Tensor) -> torch.Tensor:
    """Preprocessing defences, then normalisation, then the model: logits for [0, 1] input.

    This is the same chain ART's estimator applies (see :mod:`medbench.wrapping.estimators`); it is
    used where the harness needs gradients without an estimator (training loops).
    Preprocessors must be ART ``PreprocessorPyTorch`` objects (framework-native).
    """
    for preprocessor in defended.preprocessors:
        x, _ = preprocessor.forward(x)
    return defended.model(normalize(x, defended.normalization))


def normalize(x: torch.Tensor, normalization: Normalization) -> torch.Tensor:
    """``(x - mean) / std`` per channel, for ``(N, C, ...)`` input."""
    mean, std = mean_std(normalization.for_channels(x.shape[1]), x.ndim, x.device, x.dtype)
    return (x - mean) / std
