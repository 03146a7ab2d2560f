"""Per-cell classification metrics: accuracy, attack success, ROC AUC, perturbation size, SSIM.

Everything here is torch-native: the functions accept CPU or CUDA tensors and never round-trip
through NumPy. Reductions that need precision (ranks, norms, SSIM statistics) are computed in
float64 (float32 on devices without float64 support, such as Apple ``mps``), and every metric is
returned as a plain Python ``float``. A metric that is undefined for the data (no clean-correct
sample, a single class present, an empty batch) is ``NaN``; malformed inputs raise ``ValueError``.

The metric names are a contract shared with MLflow, the JSON results and the leaderboards; see
:data:`CLASSIFICATION_METRICS`.

Label conventions:

* single-label (binary or multi-class): ``labels`` are int class indices of shape ``(N,)`` and
  ``logits`` have shape ``(N, K)``;
* multi-label: ``labels`` are 0/1 (or bool) of shape ``(N, L)`` and ``logits`` have shape
  ``(N, L)``, one independent sigmoid per label.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "CLASSIFICATION_METRICS",
    "accuracy",
    "attack_success_rate",
    "auc_from_logits",
    "classification_metrics",
    "correct_predictions",
    "label_flip_rate",
    "multilabel_metrics",
    "perturbation_norms",
    "roc_auc",
    "ssim",
]

CLASSIFICATION_METRICS: tuple[str, ...] = (
    "clean_accuracy",
    "robust_accuracy",
    "attack_success_rate",
    "clean_auc",
    "robust_auc",
    "linf_max",
    "l2_mean",
    "ssim_mean",
    "seconds",
)
"""Names of the metrics logged for every classification cell, in the documented order.

``seconds`` (wall-clock time of the cell) is measured by the caller; the others come from
:func:`classification_metrics`.
"""

_NAN = float("nan")

_SSIM_K1 = 0.01
_SSIM_K2 = 0.03
_SSIM_WIN_SIZE = 7


# --------------------------------------------------------------------------- helpers


def _precise_dtype(device: torch.device) -> torch.dtype:
    """Return the accumulation dtype for ``device``: float64 where the device supports it."""
    return torch.float32 if device.type == "mps" else torch.float64


def _precise(t: Tensor) -> Tensor:
    """Return ``t`` converted to the accumulation dtype of its device."""
    return t.to(_precise_dtype(t.device))


def _ratio(numerator: int, denominator: int) -> float:
    """Return ``numerator / denominator`` as a float, or NaN when the denominator is zero."""
    return numerator / denominator if denominator else _NAN


def _check_logits(logits: Tensor, labels: Tensor, multilabel: bool) -> None:
    """Raise ``ValueError`` unless ``logits`` and ``labels`` have matching shapes for the task."""
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (N, K), got {tuple(logits.shape)}")
    if multilabel:
        if labels.shape != logits.shape:
            raise ValueError(
                f"multi-label labels must have the shape of the logits {tuple(logits.shape)}, "
                f"got {tuple(labels.shape)}"
            )
        if bool(((labels != 0) & (labels != 1)).any()):
            raise ValueError("multi-label labels must be 0 or 1")
        return
    if labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(
            f"labels must have shape ({logits.shape[0]},) for logits of shape {tuple(logits.shape)}, "
            f"got {tuple(labels.shape)}"
        )
    if labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"labels must be integer class indices, got {labels.dtype}")
    num_classes = max(logits.shape[1], 2)  # one logit: binary labels 0/1
    if labels.numel() and bool(((labels < 0) | (labels >= num_classes)).any()):
        raise ValueError(f"labels must be class indices in [0, {num_classes}), got values outside")


def correct_predictions(logits: Tensor, labels: Tensor, multilabel: bool = False) -> Tensor:
    """Return a bool tensor ``(N,)``: which samples the logits classify correctly.

    Single-label: ``argmax(logits) == labels`` (with a single logit column, the prediction is
    ``logit > 0``). Multi-label: every label is right when thresholding the logits at 0 (that
    is, sigmoid probabilities at 0.5).
    """
    _check_logits(logits, labels, multilabel)
    labels = labels.to(logits.device)
    if multilabel:
        return ((logits > 0) == labels.bool()).all(dim=1)
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).long() == labels.long()
    return logits.argmax(dim=1) == labels.long()


# --------------------------------------------------------------------------- accuracy


def accuracy(logits: Tensor, labels: Tensor, multilabel: bool = False) -> float:
    """Return the share of samples classified correctly.

    Args:
        logits: Model outputs, shape ``(N, K)``.
        labels: Class indices ``(N,)``, or 0/1 targets ``(N, K)`` when ``multilabel``.
        multilabel: When True a sample counts as correct only when *all* its labels are
            right, each label predicted positive iff its logit is ``> 0`` (exact-match or
            "subset" accuracy). Otherwise the prediction is ``argmax(logits)``.

    Returns:
        Accuracy in [0, 1]; NaN for an empty batch.
    """
    correct = correct_predictions(logits, labels, multilabel)
    return _ratio(int(correct.sum().item()), correct.numel())


def _clean_and_adversarial_correct(
    clean_logits: Tensor, adv_logits: Tensor, labels: Tensor, multilabel: bool
) -> tuple[Tensor, Tensor]:
    if clean_logits.shape != adv_logits.shape:
        raise ValueError(
            f"clean and adversarial logits differ in shape: "
            f"{tuple(clean_logits.shape)} vs {tuple(adv_logits.shape)}"
        )
    clean_ok = correct_predictions(clean_logits, labels, multilabel)
    adv_ok = correct_predictions(adv_logits, labels, multilabel).to(clean_ok.device)
    return clean_ok, adv_ok


def robust_accuracy(
    clean_logits: Tensor, adv_logits: Tensor, labels: Tensor, multilabel: bool = False
) -> float:
    """Return the share of samples classified correctly both clean and under attack.

    A sample is robust only if the model is right on every input of the threat model's
    ball around it, and the clean input is one of them: an attack that happens to turn a
    wrong prediction into a right one does not make that sample robust (RobustBench's
    convention). Hence ``robust_accuracy <= clean_accuracy`` always, and
    ``robust_accuracy = clean_accuracy * (1 - attack_success_rate)``.

    Args:
        clean_logits: Outputs on clean inputs, shape ``(N, K)``.
        adv_logits: Outputs on adversarial inputs, same shape.
        labels: Class indices ``(N,)``, or 0/1 targets ``(N, K)`` when ``multilabel``.
        multilabel: Use the multi-label (all labels right at threshold 0) correctness.

    Returns:
        Robust accuracy in [0, 1]; NaN for an empty batch.
    """
    clean_ok, adv_ok = _clean_and_adversarial_correct(clean_logits, adv_logits, labels, multilabel)
    both = clean_ok & adv_ok
    return _ratio(int(both.sum().item()), both.numel())


def attack_success_rate(
    clean_logits: Tensor, adv_logits: Tensor, labels: Tensor, multilabel: bool = False
) -> float:
    """Return the share of clean-correct samples that the attack makes incorrect.

    Correctness is defined as in :func:`accuracy`. Samples that are already wrong on clean
    inputs are ignored (they cannot be "flipped").

    Args:
        clean_logits: Outputs on clean inputs, shape ``(N, K)``.
        adv_logits: Outputs on adversarial inputs, same shape.
        labels: Class indices ``(N,)``, or 0/1 targets ``(N, K)`` when ``multilabel``.
        multilabel: Use the multi-label (all labels right at threshold 0) correctness.

    Returns:
        Success rate in [0, 1]; NaN when no sample is clean-correct.
    """
    clean_ok, adv_ok = _clean_and_adversarial_correct(clean_logits, adv_logits, labels, multilabel)
    flipped = clean_ok & ~adv_ok
    return _ratio(int(flipped.sum().item()), int(clean_ok.sum().item()))


def label_flip_rate(clean_logits: Tensor, adv_logits: Tensor, labels: Tensor) -> float:
    """Multi-label: return the share of clean-correct label decisions that the attack makes wrong.

    Every (sample, label) pair is one decision (positive iff the logit is ``> 0``). Of the
    pairs decided correctly on the clean input, this is the share decided wrongly on the
    adversarial input. It complements :func:`attack_success_rate`, whose multi-label unit is
    the whole sample (a sample with all labels right that ends with at least one wrong): an
    attack that flips one finding of every image has a success rate of 1 and a flip rate of
    1/L.

    Args:
        clean_logits: Outputs on clean inputs ``(N, L)``.
        adv_logits: Outputs on adversarial inputs, same shape.
        labels: 0/1 targets ``(N, L)``.

    Returns:
        Flip rate in [0, 1]; NaN when no decision is clean-correct.
    """
    _check_logits(clean_logits, labels, multilabel=True)
    _check_logits(adv_logits, labels, multilabel=True)
    truth = labels.to(clean_logits.device).bool()
    clean_ok = (clean_logits > 0) == truth
    adv_ok = (adv_logits.to(clean_logits.device) > 0) == truth
    return _ratio(int((clean_ok & ~adv_ok).sum().item()), int(clean_ok.sum().item()))


# --------------------------------------------------------------------------- ROC AUC


def _average_ranks(values: Tensor) -> Tensor:
    """Return 1-based ranks of a 1-D tensor, ties sharing the average of their ranks."""
    sorted_values, order = torch.sort(values, stable=True)
    _, inverse, counts = torch.unique_consecutive(sorted_values, return_inverse=True, return_counts=True)
    counts = counts.to(_precise_dtype(values.device))
    ends = torch.cumsum(counts, dim=0)  # rank of the last member of each tie group
    group_ranks = ends - (counts - 1) / 2  # mean of ranks ends-count+1 .. ends
    ranks = torch.empty_like(values, dtype=group_ranks.dtype)
    ranks[order] = group_ranks[inverse]
    return ranks


def roc_auc(scores: Tensor, targets: Tensor) -> float:
    """Return the area under the ROC curve via the Mann-Whitney U statistic.

    ``AUC = (R_pos - n_pos (n_pos + 1) / 2) / (n_pos * n_neg)`` where ``R_pos`` is the sum of
    the (1-based) ranks of the positive samples among all scores. Tied scores get the average
    of their ranks, so a tied positive/negative pair counts 1/2, exactly as the trapezoidal
    ROC area of :func:`sklearn.metrics.roc_auc_score`.

    Args:
        scores: Scores ``(N,)``; higher means "more positive". Any real dtype.
        targets: Binary targets ``(N,)`` with values in {0, 1} (or bool).

    Returns:
        The AUC in [0, 1]; NaN when only one class is present (or the batch is empty), or when
        any score is NaN.

    Raises:
        ValueError: On shapes other than two equal 1-D tensors, or targets outside {0, 1}.
    """
    if scores.ndim != 1 or targets.shape != scores.shape:
        raise ValueError(
            f"scores and targets must be 1-D of the same length, "
            f"got {tuple(scores.shape)} and {tuple(targets.shape)}"
        )
    targets = targets.to(scores.device)
    if bool(((targets != 0) & (targets != 1)).any()):
        raise ValueError("targets must be 0 or 1")
    positive = targets.bool()
    n_pos = int(positive.sum().item())
    n_neg = positive.numel() - n_pos
    if n_pos == 0 or n_neg == 0 or bool(torch.isnan(scores).any()):
        return _NAN
    ranks = _average_ranks(_precise(scores))
    rank_sum = float(ranks[positive].sum().item())
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def mean_defined(values: Iterable[float]) -> float:
    """Return the mean of the non-NaN values, or NaN when there is none."""
    defined = [v for v in values if not math.isnan(v)]
    return sum(defined) / len(defined) if defined else _NAN


def auc_from_logits(logits: Tensor, labels: Tensor, multilabel: bool = False) -> float:
    """Return the ROC AUC of a classifier's logits.

    * **binary** (``K == 2``): AUC of the softmax probability of class 1. It is computed from
      the logit margin ``logits[:, 1] - logits[:, 0]``, which ranks samples exactly like that
      probability but without the spurious ties of a saturated softmax (p rounds to 1.0).
      ``K == 1`` (one logit, sigmoid output) uses the logit itself.
    * **multi-class** (``K > 2``): macro one-vs-rest AUC over the classes for which it is
      defined (present, and not every sample's class), each on the softmax probability of
      that class, ranked through ``log_softmax`` in float64 to avoid underflow ties. With all
      classes present this equals ``roc_auc_score(multi_class="ovr", average="macro")``.
    * **multi-label**: mean over labels of the per-label AUC on ``sigmoid(logits)`` (ranked
      on the logits, which is equivalent), skipping labels with only one class present.

    Args:
        logits: Model outputs ``(N, K)``.
        labels: Class indices ``(N,)``, or 0/1 targets ``(N, K)`` when ``multilabel``.
        multilabel: Treat the columns as independent labels.

    Returns:
        The AUC; NaN when it is defined for no class/label.
    """
    _check_logits(logits, labels, multilabel)
    labels = labels.to(logits.device)
    logits = _precise(logits)
    if multilabel:
        return mean_defined([roc_auc(logits[:, j], labels[:, j]) for j in range(logits.shape[1])])
    labels = labels.long()
    num_classes = logits.shape[1]
    if num_classes == 1:
        return roc_auc(logits[:, 0], labels)
    if num_classes == 2:
        return roc_auc(logits[:, 1] - logits[:, 0], labels)
    log_probs = F.log_softmax(logits, dim=1)
    present = torch.unique(labels).tolist()
    return mean_defined([roc_auc(log_probs[:, k], labels == k) for k in present])


# --------------------------------------------------------------------------- perturbation size


def perturbation_norms(x: Tensor, x_adv: Tensor) -> tuple[float, float]:
    """Return the size of the perturbation ``x_adv - x``.

    Args:
        x: Clean inputs ``(N, ...)``.
        x_adv: Adversarial inputs, same shape.

    Returns:
        ``(linf_max, l2_mean)``: the largest per-sample L-infinity norm over the batch, and the
        mean over samples of the per-sample L2 norm taken over all ``C*H*W`` (or ``C*D*H*W``)
        values. Both NaN for an empty batch.
    """
    if x.shape != x_adv.shape:
        raise ValueError(f"x and x_adv differ in shape: {tuple(x.shape)} vs {tuple(x_adv.shape)}")
    if x.shape[0] == 0:
        return _NAN, _NAN
    delta = (_precise(x_adv) - _precise(x.to(x_adv.device))).reshape(x.shape[0], -1)
    if delta.shape[1] == 0:
        return 0.0, 0.0
    linf_max = float(delta.abs().max().item())
    l2_mean = float(torch.linalg.vector_norm(delta, ord=2, dim=1).mean().item())
    return linf_max, l2_mean


# --------------------------------------------------------------------------- SSIM


def _box_filter(t: Tensor, win_size: int) -> Tensor:
    """Return the mean over every full ``win_size`` window of ``(N, C, *spatial)`` (valid region)."""
    if t.ndim == 4:
        return F.avg_pool2d(t, kernel_size=win_size, stride=1)
    return F.avg_pool3d(t, kernel_size=win_size, stride=1)


def ssim(x: Tensor, y: Tensor, data_range: float = 1.0, win_size: int = _SSIM_WIN_SIZE) -> Tensor:
    """Return the per-sample structural similarity of two batches of images or volumes.

    Matches :func:`skimage.metrics.structural_similarity` with its defaults (uniform
    ``win_size``-wide window, ``use_sample_covariance=True``, ``K1=0.01``, ``K2=0.03``) and
    ``channel_axis`` set to the channel dimension: the SSIM map is averaged over the region
    where the window fits entirely (skimage crops ``(win_size - 1) // 2`` on every side, which
    is exactly the "valid" output of an unpadded average pool), then over channels.

    Statistics are computed in float64 (see module notes): in float32 the cancellation in
    ``E[x^2] - E[x]^2`` on smooth, nearly constant patches moves the result by up to ~1e-4
    (for a 1/255 perturbation), while float64 agrees with skimage's float64 result to ~1e-12.

    Args:
        x: Reference batch ``(N, C, H, W)`` or ``(N, C, D, H, W)``.
        y: Distorted batch, same shape.
        data_range: Dynamic range of the intensities (1.0 for images in [0, 1]).
        win_size: Odd side length of the window.

    Returns:
        SSIM per sample, shape ``(N,)``, in the accumulation dtype, on ``x``'s device.

    Raises:
        ValueError: On mismatched or unsupported shapes, an even window, or a window larger
            than a spatial side.
    """
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
    if x.ndim not in (4, 5):
        raise ValueError(f"expected (N, C, H, W) or (N, C, D, H, W), got {tuple(x.shape)}")
    if win_size < 1 or win_size % 2 == 0:
        raise ValueError(f"win_size must be odd and positive, got {win_size}")
    if x.shape[0] == 0:
        return torch.empty(0, dtype=_precise_dtype(x.device), device=x.device)
    if min(x.shape[2:]) < win_size:
        raise ValueError(f"SSIM window {win_size} exceeds the spatial size {tuple(x.shape[2:])}")
    a = _precise(x)
    b = _precise(y.to(x.device))
    n_window = win_size ** (x.ndim - 2)
    cov_norm = n_window / (n_window - 1) if n_window > 1 else 1.0

    ux = _box_filter(a, win_size)
    uy = _box_filter(b, win_size)
    vx = cov_norm * (_box_filter(a * a, win_size) - ux * ux)
    vy = cov_norm * (_box_filter(b * b, win_size) - uy * uy)
    vxy = cov_norm * (_box_filter(a * b, win_size) - ux * uy)

    c1 = (_SSIM_K1 * data_range) ** 2
    c2 = (_SSIM_K2 * data_range) ** 2
    ssim_map = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    # Every channel has the same number of valid positions, so the flat mean over (C, *spatial)
    # equals the mean over channels of the per-channel means.
    return ssim_map.flatten(start_dim=1).mean(dim=1)


def _metric_slug(name: str) -> str:
    """``"Pleural Effusion"`` → ``"pleural_effusion"``: a label name as part of a metric key."""
    return "_".join("".join(c if c.isalnum() else " " for c in name.lower()).split())


def multilabel_metrics(
    labels: Tensor, clean_logits: Tensor, adv_logits: Tensor, label_names: Sequence[str]
) -> dict[str, float]:
    """Return the metrics that multi-label cells log on top of :data:`CLASSIFICATION_METRICS`.

    ``label_flip_rate`` (see :func:`label_flip_rate`), and the ROC AUC of every label on clean
    and adversarial inputs as ``clean_auc_<label>`` and ``robust_auc_<label>`` (the label
    name in lower case with non-alphanumerics as ``_``; ``clean_auc`` is their mean).

    Raises:
        ValueError: When the number of names differs from the number of label columns.
    """
    if len(label_names) != labels.shape[1]:
        raise ValueError(f"{len(label_names)} label names for {labels.shape[1]} label columns")
    result = {"label_flip_rate": label_flip_rate(clean_logits, adv_logits, labels)}
    for column, name in enumerate(label_names):
        slug = _metric_slug(name) or str(column)
        result[f"clean_auc_{slug}"] = roc_auc(clean_logits[:, column], labels[:, column])
        result[f"robust_auc_{slug}"] = roc_auc(adv_logits[:, column], labels[:, column])
    return result


# --------------------------------------------------------------------------- all together


def classification_metrics(
    labels: Tensor,
    clean_logits: Tensor,
    adv_logits: Tensor,
    x_clean: Tensor,
    x_adv: Tensor,
    multilabel: bool = False,
    data_range: float = 1.0,
    per_sample_ssim: Tensor | None = None,
) -> dict[str, float]:
    """Return the standard metrics of one classification cell.

    Args:
        labels: Class indices ``(N,)``, or 0/1 targets ``(N, K)`` when ``multilabel``.
        clean_logits: Outputs on clean inputs ``(N, K)``.
        adv_logits: Outputs on adversarial inputs ``(N, K)``.
        x_clean: Clean inputs ``(N, C, H, W)`` or ``(N, C, D, H, W)``.
        x_adv: Adversarial inputs, same shape.
        multilabel: Multi-label task (see :func:`accuracy` and :func:`auc_from_logits`).
        data_range: Intensity range for SSIM (1.0 for inputs in [0, 1]).
        per_sample_ssim: Each sample's SSIM when the caller computed it already (the slow part).

    Returns:
        The eight metrics of :data:`CLASSIFICATION_METRICS` except ``seconds``, in that order,
        as Python floats (NaN where undefined).

    Raises:
        ValueError: On mismatched shapes or invalid labels, or on inputs with a spatial side
            smaller than the 7-wide SSIM window.
    """
    linf_max, l2_mean = perturbation_norms(x_clean, x_adv)
    if per_sample_ssim is None:
        per_sample_ssim = ssim(x_clean, x_adv, data_range=data_range)
    ssim_mean = float(per_sample_ssim.mean().item()) if per_sample_ssim.numel() else _NAN
    return {
        "clean_accuracy": accuracy(clean_logits, labels, multilabel),
        "robust_accuracy": robust_accuracy(clean_logits, adv_logits, labels, multilabel),
        "attack_success_rate": attack_success_rate(clean_logits, adv_logits, labels, multilabel),
        "clean_auc": auc_from_logits(clean_logits, labels, multilabel),
        "robust_auc": auc_from_logits(adv_logits, labels, multilabel),
        "linf_max": linf_max,
        "l2_mean": l2_mean,
        "ssim_mean": ssim_mean,
    }
