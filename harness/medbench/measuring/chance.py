"""The chance levels a classifier has to beat: the majority-class rate and balanced accuracy.

Used by the ``clean-at-chance`` sanity check (:mod:`medbench.measuring.sanity`): a constant
prediction of the largest class scores the majority-class rate, which one over the number of
classes understates on imbalanced data.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from medbench.measuring.metrics import correct_predictions

_NAN = math.nan


def majority_rate(labels: Tensor) -> float:
    """The share of the most frequent class among ``labels`` (class indices): the accuracy of a
    constant prediction of that class, the chance level a classifier has to beat."""
    if labels.numel() == 0:
        return _NAN
    return float(torch.bincount(labels.long().flatten()).max().item() / labels.numel())


def balanced_accuracy(logits: Tensor, labels: Tensor) -> float:
    """The mean over the classes present in ``labels`` of the share of their samples classified
    correctly (scikit-learn's ``balanced_accuracy_score``); single-label classification."""
    correct = correct_predictions(logits, labels).cpu()
    labels = labels.long().cpu()
    recalls = [float(correct[labels == k].float().mean()) for k in torch.unique(labels).tolist()]
    return sum(recalls) / len(recalls) if recalls else _NAN
