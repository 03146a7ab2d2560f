"""Wrapping defended models in ART estimators.

Classification models become ART ``PyTorchClassifier`` objects with ``clip_values=(0, 1)``,
the model's own normalisation as ART preprocessing (a framework-native preprocessor, so
ART's PyTorch attack paths stay on the device), the defense's preprocessing defences in
front of it, and the loss and number of classes from the dataset.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from art.defences.preprocessor.preprocessor import PreprocessorPyTorch
from art.estimators.classification import PyTorchClassifier
from torch import nn

from medbench.api import DatasetBundle, DefendedModel, Normalization
from medbench.wrapping.acceleration import Acceleration, accelerate
from medbench.wrapping.bpda import EOTPyTorchClassifier, randomized
from medbench.wrapping.forward import normalize


class MeanStdNormalization(PreprocessorPyTorch):
    """``(x - mean) / std`` per channel, as an ART framework-native preprocessor.

    Unlike ART's ``StandardisationMeanStdPyTorch`` it keeps mean and std as tensors on the
    device instead of copying them from host memory at every call (every attack step).
    """

    def __init__(self, normalization: Normalization, device: torch.device) -> None:
        super().__init__(
            device_type="gpu" if device.type == "cuda" else "cpu", apply_fit=True, apply_predict=True
        )
        self.normalization = normalization

    def forward(self, x: torch.Tensor, y: Any = None) -> tuple[torch.Tensor, Any]:
        return normalize(x, self.normalization), y

    def _check_params(self) -> None:
        if len(self.normalization.mean) != len(self.normalization.std):
            raise ValueError("mean and std must have the same length")
        if any(s <= 0 for s in self.normalization.std):
            raise ValueError("std must be positive")


class MultiHotLabels:
    """Keeps multi-label targets as 0/1 float matrices in an ART ``PyTorchClassifier``.

    ART reads any 2-D label array as one-hot. For a BCE loss it reduces it to the arg-max
    index before computing the loss, so a multi-hot target ``(N, L)`` would reach
    ``BCEWithLogitsLoss`` as ``(N,)``; and ART's FGSM family (FGSM, BIM, PGD) first divides
    every row by its sum (``[1, 0, 1]`` becomes ``[.5, 0, .5]``, an all-negative row NaN).
    This mixin gives the loss the 0/1 matrix back (``y > 0``, which undoes both), so ART's
    gradient attacks maximise the BCE of every label against its true value.
    """

    def reduce_labels(self, y: Any) -> Any:
        if isinstance(y, torch.Tensor):
            return (y > 0).float()
        return (np.asarray(y) > 0).astype(np.float32)


class MultiLabelPyTorchClassifier(MultiHotLabels, PyTorchClassifier):
    """``PyTorchClassifier`` for multi-label data (BCE-with-logits on multi-hot targets)."""


class MultiLabelEOTPyTorchClassifier(MultiHotLabels, EOTPyTorchClassifier):
    """:class:`~medbench.wrapping.bpda.EOTPyTorchClassifier` for multi-label data."""


def classifier_estimator(
    defended: DefendedModel,
    dataset: DatasetBundle,
    device: torch.device,
    eot_samples: int = 1,
    acceleration: Acceleration | None = None,
) -> PyTorchClassifier:
    """Wrap a defended classification model in ART's ``PyTorchClassifier``.

    Args:
        defended: The model, its normalisation and its preprocessing defences.
        dataset: Gives the input shape, the number of classes and the loss
            (cross-entropy, or BCE-with-logits for multi-label data).
        device: Where the model lives; ART runs its PyTorch attack paths there.
        eot_samples: Draws whose input gradients are averaged when a preprocessing defence
            is randomised (EOT); ignored otherwise.
        acceleration: bf16 autocast, channels-last, ``torch.compile`` around the network
            (:mod:`medbench.wrapping.acceleration`); ``defended.model`` is wrapped, not changed
            (channels-last converts its weights' memory layout, not their values).
    """
    eot = eot_samples > 1 and randomized(defended.preprocessors)
    factory: Any
    if dataset.multilabel:
        factory = MultiLabelEOTPyTorchClassifier if eot else MultiLabelPyTorchClassifier
    else:
        factory = EOTPyTorchClassifier if eot else PyTorchClassifier
    if eot:
        factory = functools.partial(factory, eot_samples=eot_samples)
    normalization = defended.normalization.for_channels(dataset.in_channels)
    loss: nn.Module = nn.BCEWithLogitsLoss() if dataset.multilabel else nn.CrossEntropyLoss()
    defended.model.to(device).eval()
    model = accelerate(defended.model, acceleration, device, dataset.input_shape)
    return factory(
        model=model,
        loss=loss,
        input_shape=tuple(dataset.input_shape),
        nb_classes=dataset.num_classes,
        clip_values=(0.0, 1.0),
        preprocessing_defences=list(defended.preprocessors) or None,
        preprocessing=MeanStdNormalization(normalization, device),
        device_type="gpu" if device.type == "cuda" else "cpu",
    )


@contextmanager
def frozen_parameters(defended: DefendedModel) -> Iterator[None]:
    """Stop computing parameter gradients while the model is attacked, then restore the flags.

    Attacks need gradients with respect to the input only; without this, every attack step
    also pays for the weight gradients of every layer (about half of a convolution's
    backward pass).
    """
    parameters = list(defended.model.parameters())
    for module in defended.modules.values():
        parameters.extend(module.parameters())
    flags = [p.requires_grad for p in parameters]
    for parameter in parameters:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in zip(parameters, flags, strict=True):
            parameter.requires_grad_(flag)


def art_labels(estimator: Any, y: torch.Tensor) -> torch.Tensor:
    """Labels as ART's attacks hand them to ``loss_gradient``: class indices become one-hot
    float rows; multi-hot and dense (segmentation) labels pass unchanged."""
    if y.dim() == 1 and hasattr(estimator, "nb_classes"):
        return nn.functional.one_hot(y.long(), max(int(estimator.nb_classes), 2)).float()
    return y


def input_gradient(estimator: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The estimator's loss gradient with respect to ``x`` (ART's ``loss_gradient``), on ``x``'s device.

    Stays in torch when every preprocessing step of the estimator is framework-native (the
    model's normalisation and the differentiable defences); otherwise it goes through ART's
    NumPy path once, as ART's own attacks do.
    """
    labels = art_labels(estimator, y)
    if getattr(estimator, "all_framework_preprocessing", True):
        grad = estimator.loss_gradient(x, labels)
        return torch.as_tensor(grad, device=x.device)
    grad_np = estimator.loss_gradient(x.detach().cpu().numpy(), labels.detach().cpu().numpy())
    return torch.from_numpy(np.asarray(grad_np)).to(x.device)


def predict_logits(estimator: Any, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Logits of the estimator's model for [0, 1] input ``x``, on ``x``'s device, without gradients.

    Goes through the estimator's own preprocessing chain (defences, then normalisation),
    with torch tensors end to end.
    """
    outputs = []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            logits, _ = estimator._predict_framework(x[start : start + batch_size])
            outputs.append(logits.detach())
    return torch.cat(outputs) if outputs else x.new_zeros((0, estimator.nb_classes))
