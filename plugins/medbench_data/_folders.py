"""Shared logic of the loaders that read a dataset's public release from local folders.

The loaders of ``brain-tumor-mri``, ``chest-xray-pneumonia``, ``iq-oth-nccd``, ``busi`` and
``isic2018-skin4`` all do the same things, implemented once here:

* find the release's top folder under ``--data-dir`` (the folder itself or a parent up to two
  levels above it, so that a Kaggle zip extracted as-is works), matching folder names without
  regard to case and accepting alternative spellings;
* list the images of each source folder (PNG/JPEG, hidden files skipped, masks excluded where
  the release ships them) and group source folders into classes;
* downsample classes at random with the seed (class balancing, or a cap on one class);
* resize (shorter side) and center-crop every image to ``image_size``, as torchvision's
  ``Resize(size)`` + ``CenterCrop(size)`` do on PIL images, in grayscale or RGB, quantised to
  8 bits like ``ToTensor`` on a PIL image (:mod:`medbench_data._folder_images`);
* split stratified by class with the seed, and decode everything at load time when the
  decoded images are small (``preload_mb``), else lazily, one image per item;
* fingerprint the content of every file read, the labels, the split and the settings.

Every problem with the files is a one-line :class:`~medbench.api.toolkit.UsageError` that names
the path and the expected layout (or the file that cannot be read).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from medbench.api import Dataset, DatasetBundle
from medbench.api.toolkit import UsageError
from medbench_data._common import TensorSplit, fingerprint, stratified_split, validate_fractions
from medbench_data._folder_images import (
    ImageFileSplit,
    check_image_header,
    decode,
    read_image_bytes,
)
from medbench_data.imagefolder import IMAGE_SUFFIXES

Source = tuple[str, ...]
"""A file or folder of a release, relative to its top folder, with its alternative spellings
(``("Bengin cases", "Benign cases")``); ``/`` separates path components."""

_SEARCH_DEPTH = 2
_BALANCE_STREAM = 0xBA1A
_MIB = 1 << 20


# --------------------------------------------------------------------------- finding files


def resolve(base: Path, source: Source) -> Path | None:
    """The first spelling of ``source`` that exists under ``base``, matching names without case.

    Args:
        base: The folder the source is relative to.
        source: Alternative relative paths, tried in order.

    Returns:
        The existing path (with the spelling found on disk), or None.
    """
    for alternative in source:
        current = base
        for part in Path(alternative).parts:
            exact = current / part
            if exact.exists():
                current = exact
                continue
            try:
                matches = sorted(p for p in current.iterdir() if p.name.lower() == part.lower())
            except OSError:
                matches = []
            if not matches:
                break
            current = matches[0]
        else:
            return current
    return None


def find_root(data_dir: Path, markers: Sequence[Source], *, owner: str, layout: str) -> Path:
    """The release's top folder: ``data_dir`` or the nearest folder below it that holds ``markers``.

    Folders are searched breadth-first (sorted, hidden ones and ``__MACOSX`` skipped) down to
    two levels below ``data_dir``, so ``--data-dir`` may point at the release's folder or at the
    folder a zip was extracted into.

    Args:
        data_dir: What the user gave as ``--data-dir``.
        markers: Files or folders that the top folder must contain (each with its spellings).
        owner: The dataset's name, for messages.
        layout: The expected layout, for messages.

    Raises:
        UsageError: When ``data_dir`` is not a folder or no folder holds every marker; the
            message names ``data_dir``, what it lacks and the layout.
    """
    if not data_dir.is_dir():
        raise UsageError(f"{owner}: {data_dir} is not a directory; expected layout: {layout}")
    level = [data_dir]
    for depth in range(_SEARCH_DEPTH + 1):
        for candidate in level:
            if all(resolve(candidate, marker) is not None for marker in markers):
                return candidate
        if depth < _SEARCH_DEPTH:
            level = [child for folder in level for child in _subfolders(folder)]
    missing = [marker[0] for marker in markers if resolve(data_dir, marker) is None]
    raise UsageError(f"{owner}: {data_dir} lacks {', '.join(missing)}; expected layout: {layout}")


def _subfolders(folder: Path) -> list[Path]:
    try:
        children = sorted(folder.iterdir())
    except OSError:
        return []
    return [c for c in children if c.is_dir() and not c.name.startswith((".", "__MACOSX"))]


def list_images(folder: Path, exclude: Callable[[Path], bool] | None = None) -> list[Path]:
    """The PNG/JPEG files directly in ``folder``, sorted by name, hidden and excluded ones left out."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES
        and not p.name.startswith(".")
        and p.is_file()
        and not (exclude is not None and exclude(p))
    )


def scan_classes(
    root: Path,
    classes: Mapping[str, Sequence[Source]],
    *,
    owner: str,
    layout: str,
    exclude: Callable[[Path], bool] | None = None,
) -> tuple[list[Path], np.ndarray]:
    """The images of each class, gathered from its source folders.

    Args:
        root: The release's top folder (see :func:`find_root`).
        classes: Class name → the folders whose images belong to it, in label order.
        owner: The dataset's name, for messages.
        layout: The expected layout, for messages.
        exclude: Files to leave out (e.g. segmentation masks).

    Returns:
        ``(paths, labels)``: every image, class by class, and its class index (``int64``).

    Raises:
        UsageError: When a source folder is missing or holds no image.
    """
    paths: list[Path] = []
    labels: list[int] = []
    for index, sources in enumerate(classes.values()):
        for source in sources:
            folder = resolve(root, source)
            if folder is None or not folder.is_dir():
                raise UsageError(f"{owner}: {root} lacks the folder {source[0]}; expected layout: {layout}")
            images = list_images(folder, exclude)
            if not images:
                raise UsageError(f"{owner}: {folder} has no PNG/JPEG images; expected layout: {layout}")
            paths.extend(images)
            labels.extend([index] * len(images))
    return paths, np.asarray(labels, dtype=np.int64)


def under(folder: str, source: Source) -> Source:
    """``source`` inside ``folder``: every spelling prefixed with ``folder/``."""
    return tuple(f"{folder}/{name}" for name in source)


def check_release_folders(chosen: Sequence[str], known: Sequence[str]) -> None:
    """Check a ``release_folders`` setting: at least one name, each one of ``known`` (any case).

    Raises:
        ValueError: Naming the unknown folders and the known ones.
    """
    if not chosen:
        raise ValueError(f"release_folders must name at least one of {', '.join(known)}")
    lower = {name.lower() for name in known}
    unknown = [name for name in chosen if name.lower() not in lower]
    if unknown:
        raise ValueError(f"release_folders: unknown {', '.join(unknown)} (known: {', '.join(known)})")


def canonical_folders(chosen: Sequence[str], known: Sequence[str]) -> list[str]:
    """The release folders chosen, spelled as in ``known``, without repeats, in the order given."""
    by_lower = {name.lower(): name for name in known}
    return list(dict.fromkeys(by_lower[name.lower()] for name in chosen))


# --------------------------------------------------------------------------- class sizes


def downsample_classes(labels: np.ndarray, targets: Mapping[int, int], seed: int) -> np.ndarray:
    """Keep at most ``targets[c]`` samples of each class ``c``, chosen at random with the seed.

    Args:
        labels: ``(N,)`` class of every sample.
        targets: Class index → how many to keep; classes not listed keep all their samples.
        seed: Seeds the choice.

    Returns:
        The sorted ``int64`` indices of the samples kept.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, _BALANCE_STREAM])
    kept = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        target = targets.get(int(cls))
        if target is not None and len(members) > target:
            members = rng.choice(members, size=target, replace=False)
        kept.append(members)
    return np.sort(np.concatenate(kept)).astype(np.int64) if kept else np.zeros(0, np.int64)


def balance_by_downsampling(labels: np.ndarray, seed: int) -> np.ndarray:
    """Indices of a class-balanced subset: every class downsampled at random to the smallest one."""
    classes, counts = np.unique(np.asarray(labels), return_counts=True)
    smallest = int(counts.min()) if len(counts) else 0
    return downsample_classes(labels, {int(c): smallest for c in classes}, seed)


# --------------------------------------------------------------------------- settings and bundle


@dataclass(frozen=True)
class FolderSettings:
    """Settings shared by the release-folder datasets.

    Attributes:
        image_size: Side of the square images after resizing the shorter side and
            center-cropping (8 to 1024).
        channels: 1 (grayscale, ITU-R 601 luma) or 3 (RGB).
        val_fraction: Share of each class in the validation split.
        test_fraction: Share of each class in the test split.
        preload_mb: Decode every image at load time and keep them in memory (8-bit) when they
            take at most this many MiB; otherwise each image is decoded when it is read.
            Does not change the data or the fingerprint.
    """

    image_size: int = 224
    channels: int = 1
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    preload_mb: int = 256

    def validate(self) -> None:
        """Raise ValueError on an out-of-range setting."""
        if not 8 <= self.image_size <= 1024:
            raise ValueError(f"image_size must be in [8, 1024], got {self.image_size}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.preload_mb < 0:
            raise ValueError(f"preload_mb must be >= 0, got {self.preload_mb}")
        validate_fractions(self.val_fraction, self.test_fraction)


@dataclass(frozen=True)
class BalancedFolderSettings(FolderSettings):
    """Settings of the binary, class-balanced datasets of paper 000.

    Attributes:
        image_size: Side of the square images after resizing the shorter side and
            center-cropping (8 to 1024).
        channels: 1 (grayscale, ITU-R 601 luma) or 3 (RGB).
        val_fraction: Share of each class in the validation split.
        test_fraction: Share of each class in the test split.
        preload_mb: Decode every image at load time when they take at most this many MiB.
        balance: Downsample the larger class at random (with the seed) to the size of the
            smaller one before splitting.
    """

    balance: bool = True


def build_bundle(
    *,
    owner: str,
    settings: FolderSettings,
    root: Path,
    paths: Sequence[Path],
    labels: np.ndarray,
    class_names: tuple[str, ...],
    seed: int,
    modality: str,
) -> DatasetBundle:
    """Split, read and fingerprint the chosen images of a release.

    Args:
        owner: The dataset's name (fingerprint, messages).
        settings: Image size, channels, split fractions and ``preload_mb``.
        root: The release's top folder; file names are fingerprinted relative to it.
        paths: The images kept (after grouping and downsampling).
        labels: Their class indices.
        class_names: Names of the classes, in label order.
        seed: Seeds the stratified split.
        modality: Recorded in the bundle.

    Raises:
        UsageError: When a file cannot be read or decoded (naming it), or a class is empty.
    """
    labels = np.asarray(labels, dtype=np.int64)
    present = set(np.unique(labels).tolist())
    for index, class_name in enumerate(class_names):
        if index not in present:
            raise UsageError(f"{owner}: no image of class {class_name!r} under {root}")
    size, channels = settings.image_size, settings.channels
    train, val, test = stratified_split(labels, settings.val_fraction, settings.test_fraction, seed)
    preload = len(paths) * channels * size * size <= settings.preload_mb * _MIB
    order = np.concatenate([train, val, test])
    digests, images = _ingest(paths, order, size, channels, owner, preload=preload)
    labels_t = torch.from_numpy(labels)
    parts = (train, val, test)
    splits: list[TorchDataset[Any]]
    if preload:
        # the buffer holds train, val and test one after the other: each split is a view of it
        tensor = torch.from_numpy(images)
        bounds = np.cumsum([0, *(len(part) for part in parts)])
        splits = [
            TensorSplit(tensor[start:stop], labels_t[part])
            for start, stop, part in zip(bounds[:-1], bounds[1:], parts, strict=True)
        ]
    else:
        splits = [
            ImageFileSplit([paths[i] for i in part], labels_t[part], size, channels, owner) for part in parts
        ]
    identity = {k: v for k, v in dataclasses.asdict(settings).items() if k != "preload_mb"}
    relative = [p.relative_to(root).as_posix() for p in paths]
    return DatasetBundle(
        train=splits[0],
        val=splits[1],
        test=splits[2],
        class_names=class_names,
        input_shape=(channels, size, size),
        modality=modality,
        fingerprint=fingerprint(
            owner,
            identity,
            [digests, labels, train, val, test],
            {"files": relative, "classes": list(class_names), "seed": seed},
        ),
    )


def _ingest(
    paths: Sequence[Path], order: np.ndarray, size: int, channels: int, owner: str, *, preload: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Read every file once (in parallel): hash it, and decode it when preloading.

    Args:
        paths: The images, in sample order.
        order: The sample indices in the order of the decoded buffer (train, val, test).
        size: Side of the square images.
        channels: 1 or 3.
        owner: The dataset's name, for messages.
        preload: Decode every image into the buffer; otherwise only check its header.

    Returns:
        ``(digests, images)``: the ``(N, 16)`` ``uint8`` BLAKE2b digest of each sample's
        file, in sample order, and the ``uint8`` ``(len(order), channels, size, size)``
        decoded images in ``order`` (empty unless ``preload``).

    Raises:
        UsageError: When a file cannot be read or decoded, naming it.
    """
    digests = np.zeros((len(paths), 16), dtype=np.uint8)
    images = np.empty((len(order) if preload else 0, channels, size, size), dtype=np.uint8)

    def ingest(position: int) -> None:
        """Hash the file of sample ``order[position]``; decode it into ``images[position]``."""
        index = int(order[position])
        path = paths[index]
        data = read_image_bytes(path, owner)
        digests[index] = np.frombuffer(hashlib.blake2b(data, digest_size=16).digest(), dtype=np.uint8)
        if preload:
            images[position] = decode(data, path, size, channels, owner)
        else:
            check_image_header(data, path, owner)

    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(ingest, range(len(order))):
            pass
    return digests, images


class BalancedFolderDataset(Dataset):
    """Base of the binary datasets of paper 000: class folders grouped, balanced, split.

    A subclass sets ``name``, ``description``, ``layout`` and ``modality`` and implements
    :meth:`class_sources` (and :meth:`excluded` when the release holds files that are not
    samples). Loading finds the release's top folder, lists each class's images,
    downsamples the larger class at random with the seed (when ``balance`` is on), resizes
    and center-crops, and splits stratified by class. Paper 000 states no split; the default
    15 % validation and 15 % test fit its Table 2, whose accuracies are multiples of one over
    the test size that 15 % gives (478 Brain MRI images, 160 Chest CT, 474 Chest X-ray).
    """

    task = "classification"
    needs_data_dir = True
    modality: ClassVar[str] = "unknown"
    Settings: ClassVar[type] = BalancedFolderSettings

    @abstractmethod
    def class_sources(self) -> dict[str, list[Source]]:
        """Class name → the release folders its images come from, in label order."""

    def excluded(self, path: Path) -> bool:
        """True for files of the class folders that are not samples. The default keeps all."""
        return False

    def load(self, data_dir: Path | None, seed: int) -> DatasetBundle:
        if data_dir is None:
            raise UsageError(f"{self.name} needs --data-dir; expected layout: {self.layout}")
        sources = self.class_sources()
        markers = [source for folders in sources.values() for source in folders]
        root = find_root(data_dir, markers, owner=self.name, layout=self.layout)
        paths, labels = scan_classes(
            root, sources, owner=self.name, layout=self.layout, exclude=self.excluded
        )
        if self.settings.balance:
            kept = balance_by_downsampling(labels, seed)
            paths, labels = [paths[i] for i in kept], labels[kept]
        return build_bundle(
            owner=self.name,
            settings=self.settings,
            root=root,
            paths=paths,
            labels=labels,
            class_names=tuple(sources),
            seed=seed,
            modality=self.modality,
        )
