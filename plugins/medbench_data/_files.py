"""Helpers shared by the datasets that read public releases from local files.

CSV and list files, paths of a release resolved against ``--data-dir``, file identities for
fingerprints, patient-wise hold-outs, and :class:`LazyImages`, a split that decodes and
resizes one image per item instead of holding the whole release in memory (CheXpert alone is
224,316 images: about 90 GB as float32 at 320 × 320).
"""

from __future__ import annotations

import csv
import functools
import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Literal, Protocol

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset as TorchDataset

from medbench.api import DatasetBundle
from medbench.api.toolkit import UsageError
from medbench_data._common import fingerprint, stratified_split
from medbench_data.imagefolder import _resize, to_grayscale_array

Fit = Literal["stretch", "crop"]
"""How a non-square image becomes square: ``stretch`` resizes both sides to the target (what
the CheXpert and MURA reference pipelines do); ``crop`` keeps the central square first."""

ImageReader = Callable[[Path], np.ndarray]
"""Reads one file to a 2D ``float32`` array in [0, 1]; raises :class:`UsageError` naming the file."""


# --------------------------------------------------------------------------- text files


def find_file(data_dir: Path, names: Sequence[str], owner: str, layout: str) -> Path:
    """The first of ``names`` that is a file in ``data_dir``.

    Raises:
        UsageError: When none exists, naming the folder, the names and the expected layout.
    """
    for name in names:
        if (data_dir / name).is_file():
            return data_dir / name
    wanted = " or ".join(names)
    raise UsageError(f"{owner}: {wanted} not found in {data_dir}; expected layout: {layout}")


def read_csv(path: Path, required: Sequence[str], owner: str, layout: str) -> list[dict[str, str]]:
    """The rows of a CSV file with a header, as dicts of stripped strings.

    Args:
        path: The file.
        required: Columns that must be present.
        owner: The dataset's name, for messages.
        layout: The expected layout, for messages.

    Raises:
        UsageError: When the file cannot be read or decoded, or lacks a required column.
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [name.strip() for name in reader.fieldnames or []]
            missing = [name for name in required if name not in columns]
            if missing:
                raise UsageError(
                    f"{owner}: {path} lacks the column(s) {', '.join(map(repr, missing))}; "
                    f"expected layout: {layout}"
                )
            return [
                {key.strip(): (value or "").strip() for key, value in row.items() if key is not None}
                for row in reader
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UsageError(f"{owner}: cannot read {path}: {error}") from None


def read_lines(path: Path, owner: str) -> list[str]:
    """The non-empty lines of a text file, stripped.

    Raises:
        UsageError: When the file cannot be read or decoded, naming it.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"{owner}: cannot read {path}: {error}") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


# --------------------------------------------------------------------------- release paths


def release_root(data_dir: Path, marker: str, folders: Sequence[str]) -> Path:
    """``data_dir``, or the release folder inside it (one of ``folders``) that holds ``marker``
    when ``data_dir`` itself does not: ``--data-dir`` may name the release or its parent."""
    if (data_dir / marker).is_file():
        return data_dir
    for name in folders:
        if (data_dir / name / marker).is_file():
            return data_dir / name
    return data_dir


class ReleasePaths:
    """Resolves the relative paths a release lists (``CheXpert-v1.0-small/train/...``).

    The CSV files of CheXpert and MURA list images relative to the folder that *holds* the
    release folder. With ``--data-dir`` pointing at the release folder (where the CSV files
    are), a path is found under the parent of ``--data-dir``, under ``--data-dir`` itself, or
    under ``--data-dir`` without its first component (a renamed release folder). The first
    listed path decides which base applies to all of them.
    """

    def __init__(self, data_dir: Path, owner: str, layout: str) -> None:
        self.data_dir = data_dir
        self.owner = owner
        self.layout = layout
        self._mode: int | None = None

    def _candidates(self, parts: tuple[str, ...]) -> list[Path]:
        candidates = [self.data_dir.parent.joinpath(*parts), self.data_dir.joinpath(*parts)]
        if len(parts) > 1:
            candidates.append(self.data_dir.joinpath(*parts[1:]))
        return candidates

    def resolve(self, relative: str, listed_in: Path) -> Path:
        """The file a listed path stands for (existence is checked only for the first one).

        Raises:
            UsageError: On an absolute path or one with ``..``, or when the first path is
                found under none of the bases.
        """
        pure = PurePosixPath(relative.replace("\\", "/"))
        if not relative or pure.is_absolute() or ".." in pure.parts:
            raise UsageError(
                f"{self.owner}: {listed_in} lists {relative!r}: paths must be relative, without .."
            )
        candidates = self._candidates(pure.parts)
        if self._mode is None:
            for mode, candidate in enumerate(candidates):
                if candidate.is_file():
                    self._mode = mode
                    break
            else:
                tried = ", ".join(str(c) for c in candidates)
                raise UsageError(
                    f"{self.owner}: {listed_in} lists {relative!r}, found neither at {tried}; "
                    f"expected layout: {self.layout}"
                )
        if self._mode >= len(candidates):
            raise UsageError(f"{self.owner}: {listed_in} lists {relative!r}, which has no folder part")
        return candidates[self._mode]


def files_digest(paths: Sequence[Path], root: Path, owner: str, listed_in: Path | str) -> str:
    """A digest of the files' paths (relative to ``root``), sizes and modification times.

    Also checks that every file exists: one ``stat`` per file does both.

    Raises:
        UsageError: Naming the first missing file (and how many are missing).
    """
    digest = hashlib.blake2b(digest_size=16)
    missing: list[Path] = []
    for path in paths:
        try:
            stat = path.stat()
        except (OSError, ValueError):  # ValueError: a NUL byte in the listed path
            missing.append(path)
            continue
        if missing:
            continue
        name = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.as_posix()
        digest.update(f"{name}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UsageError(f"{owner}: {missing[0]} (listed in {listed_in}) does not exist{more}")
    return digest.hexdigest()


# --------------------------------------------------------------------------- splits


def seeded_order(count: int, seed: int, purpose: int) -> np.ndarray:
    """A permutation of ``range(count)`` fixed by the seed (and a per-use constant)."""
    return np.random.default_rng([seed, purpose]).permutation(count).astype(np.int64)


def group_holdout(groups: Sequence[str], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out a seeded share of the *groups* (patients), so that none spans both parts.

    ``round(n_groups * fraction)`` groups are held out, at least one when ``fraction > 0``
    and at most all but one.

    Returns:
        ``(kept, held)`` sorted ``int64`` indices into ``groups``.
    """
    names = np.asarray(sorted(set(groups)), dtype=object)
    if fraction <= 0 or len(names) < 2:
        return np.arange(len(groups), dtype=np.int64), np.zeros(0, np.int64)
    count = min(max(int(len(names) * fraction + 0.5), 1), len(names) - 1)
    rng = np.random.default_rng([seed, 0x9A71E7])
    held_names = set(names[rng.permutation(len(names))[:count]].tolist())
    held_mask = np.fromiter((group in held_names for group in groups), dtype=bool, count=len(groups))
    return np.flatnonzero(~held_mask).astype(np.int64), np.flatnonzero(held_mask).astype(np.int64)


def subsample(indices: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A seeded random share of ``indices`` (at least one), in their original order."""
    if fraction >= 1.0 or len(indices) == 0:
        return indices
    count = max(int(len(indices) * fraction + 0.5), 1)
    chosen = np.random.default_rng([seed, 0x5AB5E7]).choice(len(indices), count, replace=False)
    return indices[np.sort(chosen)]


def stratified_group_split(
    labels: np.ndarray, groups: Sequence[str], val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`~medbench_data._common.stratified_split` over groups whose items share one label.

    Every group (a DICOM series, a patient) goes whole to one split; the fractions count
    groups. Each split is shuffled.

    Raises:
        ValueError: When a group holds items of different labels.
    """
    labels = np.asarray(labels)
    names = sorted(set(groups))
    index = {name: position for position, name in enumerate(names)}
    group_of = np.fromiter((index[g] for g in groups), dtype=np.int64, count=len(groups))
    group_labels = np.full(len(names), -1, dtype=np.int64)
    for group, label in zip(group_of.tolist(), labels.tolist(), strict=True):
        if group_labels[group] not in (-1, label):
            raise ValueError(f"group {names[group]!r} holds items of different classes")
        group_labels[group] = label
    parts = stratified_split(group_labels, val_fraction, test_fraction, seed)
    rng = np.random.default_rng([seed, 0x6209])
    result = []
    for part in parts:
        members = np.flatnonzero(np.isin(group_of, part))
        result.append(rng.permutation(members).astype(np.int64))
    return result[0], result[1], result[2]


# --------------------------------------------------------------------------- images


def resize_square(array: np.ndarray, size: int, fit: Fit = "stretch") -> np.ndarray:
    """A 2D ``float32`` array in [0, 1] resized (bilinear, antialiased) to ``size`` × ``size``."""
    array = np.ascontiguousarray(array, dtype=np.float32)
    if fit == "crop":
        height, width = array.shape
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        array = np.ascontiguousarray(array[top : top + side, left : left + side])
    return _resize(array, size)


def read_image(path: Path, owner: str) -> np.ndarray:
    """A PNG/JPEG file as a 2D grayscale ``float32`` array in [0, 1] (see ``to_grayscale_array``).

    Raises:
        UsageError: When the file cannot be opened or decoded, naming it.
    """
    try:
        with Image.open(path) as image:
            image.load()
            return to_grayscale_array(image)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise UsageError(f"{owner}: cannot decode image {path}: {error}") from None


class LazyImages(TorchDataset[tuple[torch.Tensor, torch.Tensor]]):
    """One split of image files, decoded and resized when an item is read.

    Items are ``(image, label)``: ``image`` a ``float32`` tensor ``(1, size, size)`` in
    [0, 1]; ``label`` an ``int64`` scalar, or a ``float32`` multi-hot vector when ``labels``
    is two-dimensional.

    Attributes:
        paths: The files, in item order.
        labels: ``(N,)`` ``int64`` class indices or ``(N, K)`` ``float32`` 0/1 targets.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        labels: torch.Tensor,
        read: ImageReader,
        size: int,
        fit: Fit = "stretch",
    ) -> None:
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} files but {len(labels)} labels")
        self.paths = list(paths)
        self.labels = labels
        self.read = read
        self.size = size
        self.fit = fit

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        array = resize_square(self.read(self.paths[index]), self.size, self.fit)
        return torch.from_numpy(array).unsqueeze(0), self.labels[index]

    def probe(self) -> None:
        """Decode the first item now, so that an unreadable release fails at load time."""
        if self.paths:
            self[0]


def lazy_splits(
    owner: str,
    parts: Sequence[tuple[str, Sequence[Path], np.ndarray]],
    read: ImageReader,
    size: int,
    fit: Fit,
    hint: str = "",
) -> list[LazyImages]:
    """One :class:`LazyImages` per ``(split name, files, labels)``, each checked on its first item.

    Labels are ``int64`` class indices ``(N,)`` or 0/1 targets ``(N, K)`` (stored as ``float32``).

    Raises:
        UsageError: When a split is empty (with ``hint`` appended) or its first file is unreadable.
    """
    splits = []
    for name, paths, labels in parts:
        if len(paths) == 0:
            raise UsageError(f"{owner}: the {name} split is empty{hint}")
        array = np.asarray(labels)
        tensor = torch.from_numpy(
            array.astype(np.float32) if array.ndim == 2 else array.astype(np.int64)
        ).contiguous()
        split = LazyImages(paths, tensor, read, size, fit)
        split.probe()
        splits.append(split)
    return splits


class ReleaseSettings(Protocol):
    """The settings every release with an official test list has."""

    @property
    def image_size(self) -> int: ...
    @property
    def fit(self) -> Fit: ...
    @property
    def val_fraction(self) -> float: ...


def official_test_bundle(
    owner: str,
    settings: ReleaseSettings,
    seed: int,
    train: tuple[Sequence[Path], np.ndarray, Sequence[str]],
    test: tuple[Sequence[Path], np.ndarray],
    *,
    class_names: Sequence[str],
    files: str,
    hint: str,
    train_fraction: float = 1.0,
    multilabel: bool = False,
) -> DatasetBundle:
    """The splits of an X-ray release that lists its own training and test images.

    Validation holds out a seeded ``settings.val_fraction`` of the training *patients*;
    ``train_fraction`` then keeps a seeded share of the remaining training images, which are
    shuffled by the seed, as are the listed test images. The fingerprint covers the settings,
    the seed, the labels, the split indices and ``files`` (a :func:`files_digest`).

    Args:
        owner: The dataset plugin's name (errors and fingerprint).
        settings: Its settings.
        seed: Seed of the hold-out, the subsample and the orders.
        train: Listed training files, their labels, and the patient of each.
        test: Listed test files and their labels.
        class_names: Names of the classes (or of the observations, when multi-label).
        files: Digest of every listed file.
        hint: Appended to the error about an empty split.
        train_fraction: Share of the training images kept, in (0, 1].
        multilabel: Whether labels are 0/1 targets ``(N, K)``.
    """
    train_files, train_labels, patients = train
    test_files, test_labels = test
    kept, val = group_holdout(patients, settings.val_fraction, seed)
    kept = subsample(kept, train_fraction, seed)
    kept = kept[seeded_order(len(kept), seed, 0x7A1)]
    order = seeded_order(len(test_files), seed, 0x7E57)
    parts = [
        ("train", [train_files[i] for i in kept], train_labels[kept]),
        ("val", [train_files[i] for i in val], train_labels[val]),
        ("test", [test_files[i] for i in order], test_labels[order]),
    ]
    read = functools.partial(read_image, owner=owner)
    splits = lazy_splits(owner, parts, read, settings.image_size, settings.fit, hint)
    return DatasetBundle(
        train=splits[0],
        val=splits[1],
        test=splits[2],
        class_names=tuple(class_names),
        input_shape=(1, settings.image_size, settings.image_size),
        modality="xray",
        multilabel=multilabel,
        fingerprint=fingerprint(
            owner,
            settings,
            [train_labels, test_labels, kept, val, order],
            {"seed": seed, "files": files},
        ),
    )
