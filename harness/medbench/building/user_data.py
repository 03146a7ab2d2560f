"""Data that is not a dataset plugin: a user's tensors, torch ``Dataset`` or ``DataLoader``.

:func:`in_memory_dataset` checks the data (dtype, range, shapes, labels) and turns it into a
:class:`~medbench.api.Dataset` whose bundle holds it, identified by a hash of its contents
(the dataset fingerprint every cell key and model-cache key includes).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data import Dataset as TorchDataset

from medbench.api import Dataset, DatasetBundle, Task
from medbench.errors import UsageError

DataLike = tuple[torch.Tensor, torch.Tensor] | TorchDataset[Any] | DataLoader[Any]
"""``(x, y)`` tensors, a torch ``Dataset`` of ``(image, label)`` items, or a ``DataLoader`` of batches."""
RANGE_TOLERANCE = 1e-6


class UserDataError(UsageError):
    """Data given to :func:`medbench.evaluate` that medbench cannot evaluate on."""


class InMemoryDataset(Dataset):
    """A dataset whose splits are already in memory (``medbench.evaluate`` on a user's tensors)."""

    name: ClassVar[str] = "tensors"
    description: ClassVar[str] = "a user's tensors, given to medbench.evaluate"

    def __init__(self, bundle: DatasetBundle, label: str = "tensors") -> None:
        super().__init__()
        self.name = label  # type: ignore[misc]  # an instance's own name
        self.task = bundle.task  # type: ignore[misc]
        self.dims = len(bundle.input_shape) - 1  # type: ignore[misc]
        self._bundle = bundle

    def load(self, data_dir: Path | None, seed: int) -> DatasetBundle:
        return self._bundle


def as_tensors(data: DataLike, what: str = "data") -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` of tensors, a torch ``Dataset`` or a ``DataLoader``, gathered on the CPU.

    Raises:
        UserDataError: For anything else, or items that are not ``(image, label)`` pairs.
    """
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        return data[0].detach().cpu(), data[1].detach().cpu()
    try:
        if isinstance(data, DataLoader):
            batches = [(torch.as_tensor(x), torch.as_tensor(y)) for x, y in data]
            return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])
        if isinstance(data, TorchDataset):
            items = [data[i] for i in range(len(data))]  # type: ignore[arg-type]
            return (
                torch.stack([torch.as_tensor(x) for x, _ in items]),
                torch.stack([torch.as_tensor(y) for _, y in items]),
            )
    except (TypeError, ValueError, RuntimeError) as error:
        raise UserDataError(f"{what}: expected (image, label) items of equal shapes ({error})") from error
    raise UserDataError(
        f"{what}: expected (x, y) tensors, a torch Dataset or a DataLoader, got {type(data).__name__}"
    )


def check_images(x: torch.Tensor, what: str = "data") -> None:
    """Images must be float tensors in [0, 1], ``(N, C, H, W)`` or ``(N, C, D, H, W)``, finite.

    Raises:
        UserDataError: Naming the problem; values outside [0, 1] are an error, never clipped.
    """
    if not x.is_floating_point():
        raise UserDataError(f"{what}: images must be float tensors in [0, 1], got {x.dtype}")
    if x.ndim not in (4, 5) or x.shape[0] == 0:
        raise UserDataError(
            f"{what}: images must be (N, C, H, W) or (N, C, D, H, W) with N >= 1, got shape {tuple(x.shape)}"
        )
    if not torch.isfinite(x).all():
        raise UserDataError(f"{what}: images hold NaN or infinite values")
    low, high = float(x.min()), float(x.max())
    if low < -RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
        raise UserDataError(
            f"{what}: images must be in [0, 1] (budgets are on that scale), got values in "
            f"[{low:.4g}, {high:.4g}]; divide by 255 or window them first"
        )


def infer_task(x: torch.Tensor, y: torch.Tensor, what: str = "data") -> Task:
    """``classification`` for labels ``(N,)``, ``segmentation`` for label maps ``(N, *spatial)``."""
    if y.ndim == 1:
        return "classification"
    if tuple(y.shape[1:]) == tuple(x.shape[2:]):
        return "segmentation"
    raise UserDataError(
        f"{what}: labels of shape {tuple(y.shape)} fit neither classification (N,) nor "
        f"segmentation (N, {', '.join(map(str, x.shape[2:]))})"
    )


def check_labels(y: torch.Tensor, num_classes: int, n: int, what: str = "data") -> torch.Tensor:
    """Labels as ``int64`` class indices in ``[0, num_classes)``, one per sample.

    Raises:
        UserDataError: For float or boolean labels, another count than the images, or a
            class index outside the range.
    """
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise UserDataError(f"{what}: labels must be integer class indices, got {y.dtype}")
    if len(y) != n:
        raise UserDataError(f"{what}: {len(y)} labels for {n} images")
    y = y.long()
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise UserDataError(
            f"{what}: labels must be in [0, {num_classes - 1}] for {num_classes} classes, "
            f"got {int(y.min())}..{int(y.max())}"
        )
    return y


def fingerprint(*tensors: torch.Tensor) -> str:
    """A hash of the tensors' dtypes, shapes and values."""
    digest = hashlib.sha256()
    for tensor in tensors:
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()[:16]


def in_memory_dataset(
    test: DataLike,
    *,
    class_names: Sequence[str],
    task: Task,
    train: DataLike | None = None,
    val: DataLike | None = None,
    label: str = "tensors",
) -> InMemoryDataset:
    """A dataset of the given splits (evaluation data, and optionally training data).

    Raises:
        UserDataError: When any split fails :func:`check_images` or :func:`check_labels`, or
            the splits' image shapes differ.
    """
    x, y = as_tensors(test)
    check_images(x)
    y = check_labels(y, len(class_names), len(x))
    splits: dict[str, TensorDataset] = {"test": TensorDataset(x.float(), y)}
    parts = [x, y]
    if train is not None and val is None:  # hold out the last sixth of the training data for selection
        xt, yt = as_tensors(train, "train data")
        cut = max(1, len(xt) // 6)
        train, val = (xt[:-cut], yt[:-cut]), (xt[-cut:], yt[-cut:])
    for name, data in (("train", train), ("val", val)):
        if data is None:
            splits[name] = TensorDataset(x[:0].float(), y[:0])
            continue
        xs, ys = as_tensors(data, f"{name} data")
        check_images(xs, f"{name} data")
        if tuple(xs.shape[1:]) != tuple(x.shape[1:]):
            raise UserDataError(
                f"{name} data: images of shape {tuple(xs.shape[1:])}, evaluation images {tuple(x.shape[1:])}"
            )
        ys = check_labels(ys, len(class_names), len(xs), f"{name} data")
        splits[name] = TensorDataset(xs.float(), ys)
        parts += [xs, ys]
    bundle = DatasetBundle(
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        class_names=tuple(class_names),
        input_shape=tuple(x.shape[1:]),
        task=task,
        fingerprint=fingerprint(*parts),
    )
    return InMemoryDataset(bundle, label)
