"""Segmentation losses and metrics: Dice+CE, Dice, HD95, with paper 003's reference settings.

* :func:`dice_ce_loss` is MONAI's ``DiceCELoss(to_onehot_y=True, softmax=True,
  squared_pred=True, smooth_nr=0, smooth_dr=1e-6)``, the loss VAFA and the voxel baselines
  ascend and VAFT trains with, written in torch so that it runs on the attack's device
  without MONAI's per-call overhead (tested equal to MONAI's).
* Dice and HD95 follow MONAI's ``DiceMetric`` and ``HausdorffDistanceMetric`` with
  ``include_background=True`` on one-hot argmax predictions: a class absent from the ground
  truth is NaN (MONAI's ``ignore_empty``), HD95 is NaN where the prediction or the ground
  truth of a class is empty (MONAI's behaviour), in voxel units. Each image's score is the
  NaN-mean over its classes; a cell's score is the mean over images.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

SEGMENTATION_METRICS: tuple[str, ...] = (
    "clean_dice",
    "robust_dice",
    "clean_hd95",
    "robust_hd95",
    "linf_max",
    "l2_mean",
    "ssim_mean",
    "lpips_sim",
    "seconds",
)
"""Metric names of a segmentation cell (``lpips_sim`` only when LPIPS weights are available)."""


def one_hot(labels: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """``(N, *spatial)`` class indices → ``(N, K, *spatial)`` one-hot."""
    return F.one_hot(labels.long(), num_classes).movedim(-1, 1).to(dtype)


def dice_ce_loss(logits: Tensor, labels: Tensor, smooth_dr: float = 1e-6) -> Tensor:
    """Soft Dice (squared denominator, per sample and class, averaged) plus cross-entropy.

    Args:
        logits: ``(N, K, *spatial)``.
        labels: Class indices ``(N, *spatial)`` (or ``(N, 1, *spatial)``).
        smooth_dr: Added to the Dice denominator (MONAI's ``smooth_dr``); ``smooth_nr`` is 0.

    Returns:
        The scalar loss: mean Dice loss over samples and classes + mean voxel cross-entropy.
    """
    labels = _squeeze_channel(labels, logits)
    probabilities = logits.softmax(dim=1)
    target = one_hot(labels, logits.shape[1], probabilities.dtype)
    dims = tuple(range(2, logits.ndim))
    intersection = (probabilities * target).sum(dims)
    denominator = (probabilities * probabilities).sum(dims) + (target * target).sum(dims)
    dice_loss = (1.0 - 2.0 * intersection / (denominator + smooth_dr)).mean()
    return dice_loss + F.cross_entropy(logits, labels)


def _squeeze_channel(labels: Tensor, logits: Tensor) -> Tensor:
    if labels.ndim == logits.ndim:
        if labels.shape[1] != 1:
            raise ValueError(f"labels must be class indices, got shape {tuple(labels.shape)}")
        labels = labels[:, 0]
    if labels.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(
            f"labels of shape {tuple(labels.shape)} do not fit logits of shape {tuple(logits.shape)}"
        )
    return labels.long()


def dice_per_class(prediction: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Dice of each class of each image, ``(N, K)`` in float64; NaN where the class is absent
    from the ground truth (MONAI ``DiceMetric(include_background=True, ignore_empty=True)``).

    Args:
        prediction: Predicted class indices ``(N, *spatial)``.
        labels: True class indices, same shape.
        num_classes: K.
    """
    if prediction.shape != labels.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and labels {tuple(labels.shape)} differ")
    predicted = one_hot(prediction, num_classes, torch.float64).flatten(2)
    target = one_hot(labels.to(prediction.device), num_classes, torch.float64).flatten(2)
    intersection = (predicted * target).sum(2)
    denominator = predicted.sum(2) + target.sum(2)
    dice = 2.0 * intersection / denominator.clamp_min(1e-12)
    return torch.where(target.sum(2) > 0, dice, torch.full_like(dice, math.nan))


def hd95_per_class(prediction: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """95th-percentile symmetric Hausdorff distance per class and image, ``(N, K)``, in voxels.

    Computed by MONAI's ``compute_hausdorff_distance`` (Euclidean, percentile 95,
    ``directed=False``, background included). NaN where the class is empty in the
    prediction or the ground truth.
    """
    from monai.metrics import compute_hausdorff_distance

    predicted = one_hot(prediction.cpu(), num_classes)
    target = one_hot(labels.cpu(), num_classes)
    with warnings.catch_warnings():
        # MONAI warns for every empty class; the NaN it returns is the documented outcome
        warnings.simplefilter("ignore")
        distances = compute_hausdorff_distance(
            predicted, target, include_background=True, distance_metric="euclidean", percentile=95
        )
    return distances.to(torch.float64).cpu()


def image_means(per_class: Tensor) -> Tensor:
    """NaN-mean over classes, ``(N, K)`` → ``(N,)``: NaN for an image with no defined class."""
    return torch.nanmean(per_class, dim=1)


def mean_defined(values: Tensor) -> float:
    """The mean of the non-NaN entries (NaN when there are none)."""
    defined = values[~torch.isnan(values)]
    return float(defined.mean()) if defined.numel() else math.nan
