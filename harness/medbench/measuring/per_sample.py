"""Per-sample outcomes of a cell: what every statistic of a board is computed from.

Each cell logs one compact artifact, ``per_sample.npz`` (:data:`ARTIFACT`), with one entry
per evaluated sample, identified by its position in the dataset's test split (``index``)
and the dataset fingerprint (``fingerprint``):

* classification: ``label``, ``clean_pred`` and ``adv_pred`` (class indices; for multi-label
  data the per-label decisions, ``(N, K)``), ``clean_correct``, ``adv_correct`` and
  ``robust`` (correct on the clean **and** the adversarial input, the sample's share of
  ``robust_accuracy``), the logits ``clean_logits`` and ``adv_logits`` (``float32``; AUC
  and its bootstrap are recomputed from them exactly), and the perturbation's ``linf``,
  ``l2`` and ``ssim``;
* segmentation: ``clean_dice``, ``adv_dice``, ``clean_hd95``, ``adv_hd95`` per volume and
  class ``(N, K)`` (NaN where MONAI's metric is undefined), and ``linf``, ``l2``, ``ssim``.

The arrays are plain numbers (no pickles): :func:`load` reads them with
``allow_pickle=False``.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from medbench.measuring.metrics import correct_predictions, ssim
from medbench.recording.layout import ARTIFACT_PER_SAMPLE

ARTIFACT = ARTIFACT_PER_SAMPLE
"""The artifact name of a cell's per-sample outcomes."""
FORMAT_VERSION = 1

Samples = dict[str, np.ndarray]


def _numpy(tensor: Tensor, dtype: type | np.dtype) -> np.ndarray:
    return tensor.detach().cpu().numpy().astype(dtype, copy=False)


def perturbation(x: Tensor, x_adv: Tensor, with_ssim: bool = True) -> Samples:
    """Per-sample ``linf``, ``l2`` (over all values of a sample) and ``ssim`` of ``x_adv - x``
    (``with_ssim=False``: without SSIM, for a caller that has it already)."""
    delta = (x_adv.double() - x.to(x_adv.device).double()).reshape(len(x), -1)
    if delta.shape[1] == 0:
        zeros = np.zeros(len(x), dtype=np.float32)
        found = {"linf": zeros, "l2": zeros}
    else:
        found = {
            "linf": _numpy(delta.abs().amax(dim=1), np.float32),
            "l2": _numpy(torch.linalg.vector_norm(delta, dim=1), np.float32),
        }
    if with_ssim:
        found["ssim"] = _numpy(ssim(x, x_adv), np.float32) if delta.shape[1] else np.ones(len(x), np.float32)
    return found


def classification_samples(
    labels: Tensor,
    clean_logits: Tensor,
    adv_logits: Tensor,
    x: Tensor,
    x_adv: Tensor,
    multilabel: bool = False,
    with_ssim: bool = True,
) -> Samples:
    """The per-sample outcomes of one classification cell (see the module's docstring)."""
    clean_ok = correct_predictions(clean_logits, labels, multilabel).cpu()
    adv_ok = correct_predictions(adv_logits, labels, multilabel).cpu()
    if multilabel:
        clean_pred, adv_pred = clean_logits > 0, adv_logits > 0
    elif clean_logits.shape[1] == 1:
        clean_pred, adv_pred = (clean_logits[:, 0] > 0).long(), (adv_logits[:, 0] > 0).long()
    else:
        clean_pred, adv_pred = clean_logits.argmax(dim=1), adv_logits.argmax(dim=1)
    samples = {
        "label": _numpy(labels, np.int64 if not multilabel else np.uint8),
        "clean_pred": _numpy(clean_pred, np.int64 if not multilabel else np.bool_),
        "adv_pred": _numpy(adv_pred, np.int64 if not multilabel else np.bool_),
        "clean_correct": _numpy(clean_ok, np.bool_),
        "adv_correct": _numpy(adv_ok, np.bool_),
        "robust": _numpy(clean_ok & adv_ok, np.bool_),
        "clean_logits": _numpy(clean_logits.float(), np.float32),
        "adv_logits": _numpy(adv_logits.float(), np.float32),
    }
    samples.update(perturbation(x, x_adv, with_ssim))
    return samples


def segmentation_samples(
    clean_dice: Tensor, adv_dice: Tensor, clean_hd95: Tensor, adv_hd95: Tensor
) -> Samples:
    """The per-volume, per-class Dice and HD95 of one segmentation cell (add :func:`perturbation`)."""
    return {
        "clean_dice": _numpy(clean_dice, np.float32),
        "adv_dice": _numpy(adv_dice, np.float32),
        "clean_hd95": _numpy(clean_hd95, np.float32),
        "adv_hd95": _numpy(adv_hd95, np.float32),
    }


def concatenate(parts: list[Samples]) -> Samples:
    """The per-sample outcomes of several batches, in order."""
    if not parts:
        return {}
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def with_ids(samples: Samples, fingerprint: str, first_index: int = 0) -> Samples:
    """Add the sample ids: positions in the test split (the evaluation takes the first ``n_eval``
    samples in order) and the dataset fingerprint."""
    count = len(next(iter(samples.values()))) if samples else 0
    return {
        "index": np.arange(first_index, first_index + count, dtype=np.int64),
        "fingerprint": np.asarray(fingerprint),
        "format_version": np.asarray(FORMAT_VERSION),
        **samples,
    }


def save(samples: Mapping[str, np.ndarray], path: Path) -> Path:
    """Write ``samples`` as a compressed ``.npz``; return the path."""
    write: Any = np.savez_compressed  # numpy's stubs take the first keyword array for allow_pickle
    write(path, **dict(samples))
    return path


def load(source: Path | bytes) -> Samples:
    """Read a ``per_sample.npz`` (a path or its bytes), refusing pickled objects."""
    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    with np.load(handle, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


SUMMARY_KEYS = ("index", "label", "clean_pred", "adv_pred", "clean_correct", "adv_correct", "robust")
"""What the ``--json`` document lists per sample, besides the perturbation and Dice/HD95 arrays."""


def as_json(samples: Mapping[str, np.ndarray]) -> dict[str, object]:
    """The per-sample outcomes as JSON values (NaN as null), without the logits (in the artifact)."""

    def value(array: np.ndarray) -> object:
        if array.dtype.kind == "f":
            return (
                [None if np.isnan(v) else round(float(v), 6) for v in array.ravel()]
                if array.ndim == 1
                else [value(row) for row in array]
            )
        return array.tolist()

    return {
        key: value(array)
        for key, array in samples.items()
        if not key.endswith("_logits") and key not in ("format_version",)
    }
