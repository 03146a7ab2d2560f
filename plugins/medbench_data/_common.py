"""Helpers shared by the built-in datasets: seeded splits, fingerprints, in-memory splits."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from medbench.api.toolkit import UsageError

FINGERPRINT_VERSION = 1
"""Bumped whenever the preprocessing of the built-in datasets changes what they deliver."""


class TensorSplit(TorchDataset[tuple[torch.Tensor, torch.Tensor]]):
    """One split held in memory: ``(image, label)`` items from two aligned tensors.

    Images may be stored as ``uint8`` (0..255, four times smaller) or ``float32`` (in [0, 1]);
    items are always ``float32`` in [0, 1].

    Attributes:
        images: ``(N, C, H, W)`` tensor, ``uint8`` or ``float32``.
        labels: ``(N,)`` ``int64`` class indices, or ``(N, K)`` ``float32`` multi-hot vectors.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if images.dtype not in (torch.uint8, torch.float32):
            raise ValueError(f"images must be uint8 or float32, got {images.dtype}")
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        if image.dtype == torch.uint8:
            image = image.float().div_(255.0)
        return image, self.labels[index]


def validate_fractions(val_fraction: float, test_fraction: float) -> None:
    """Check split fractions: ``0 <= val``, ``0 < test`` and ``val + test < 1``.

    Raises:
        ValueError: Naming the offending setting.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction + test_fraction must be below 1 to leave a training split, "
            f"got {val_fraction} + {test_fraction}"
        )


def stratified_split(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split sample indices into train / val / test, class by class, deterministically.

    Each class of ``n_c`` samples gives ``n_c * test_fraction`` of them to test and
    ``n_c * (val_fraction + test_fraction)`` to val and test together (rounded half up),
    keeping at least one sample of every class in train. Each split is shuffled, so that its first
    samples mix the classes.

    Args:
        labels: ``(N,)`` integer class of every sample.
        val_fraction: Share of each class in the validation split.
        test_fraction: Share of each class in the test split.
        seed: Seeds the permutation.

    Returns:
        ``(train, val, test)`` arrays of ``int64`` indices into ``labels``.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, 0x5EED])
    parts: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        n = len(members)
        n_test = int(n * test_fraction + 0.5)
        n_held = min(max(int(n * (val_fraction + test_fraction) + 0.5), n_test), max(n - 1, 0))
        n_test = min(n_test, n_held)
        parts[2].append(members[:n_test])
        parts[1].append(members[n_test:n_held])
        parts[0].append(members[n_held:])
    train, val, test = (
        rng.permutation(np.concatenate(part)).astype(np.int64) if part else np.zeros(0, np.int64)
        for part in parts
    )
    return train, val, test


def require_data_dir(data_dir: Path | None, owner: str, layout: str) -> Path:
    """``--data-dir``, or a one-line :class:`UsageError` naming the expected layout."""
    if data_dir is None:
        raise UsageError(f"{owner} needs --data-dir; expected layout: {layout}")
    if not data_dir.is_dir():
        raise UsageError(f"{owner}: {data_dir} is not a directory; expected layout: {layout}")
    return data_dir


def fingerprint(
    name: str,
    settings: Any,
    arrays: Iterable[np.ndarray | torch.Tensor],
    extra: Mapping[str, Any] | None = None,
) -> str:
    """A stable hex digest of a dataset: its name, settings, extra metadata and array bytes.

    Args:
        name: The dataset plugin's name.
        settings: Its settings dataclass (or None).
        arrays: Everything it delivers, in a fixed order (images and labels of each split).
        extra: More metadata that defines the data (class names, file name...), JSON-able.

    Returns:
        A 32-character lowercase hex string.
    """
    digest = hashlib.blake2b(digest_size=16)
    header = {
        "version": FINGERPRINT_VERSION,
        "name": name,
        "settings": (
            dataclasses.asdict(settings)
            if dataclasses.is_dataclass(settings) and not isinstance(settings, type)
            else settings
        ),
        "extra": dict(extra or {}),
    }
    digest.update(json.dumps(header, sort_keys=True, default=str).encode())
    for array in arrays:
        data = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
        data = np.ascontiguousarray(data)
        digest.update(f"|{data.dtype.str}{data.shape}|".encode())
        digest.update(data.data)  # the C-contiguous bytes
    return digest.hexdigest()
