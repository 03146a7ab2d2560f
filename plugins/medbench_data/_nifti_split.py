"""The JSON split file of the ``nifti`` dataset: its pairs, its classes and the files it lists.

The file (Decathlon / BTCV / ACDC style, see :mod:`medbench_data.nifti`) lists ``training``
and ``validation`` image/label pairs (optionally ``test``) relative to ``DATA_DIR`` and names
the classes under ``labels``. Every problem with it is a one-line
:class:`~medbench.api.toolkit.UsageError` naming the file and the expected layout.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any

from medbench.api.toolkit import UsageError

LAYOUT = (
    'DATA_DIR/<split_file> (default dataset.json) with "training" and "validation" lists (optional "test") '
    'of {"image": path, "label": path} NIfTI pairs relative to DATA_DIR, and "labels": '
    '{"0": "background", "1": ...} (Decathlon / BTCV / ACDC style)'
)


def read_split_file(path: Path) -> tuple[bytes, dict[str, Any]]:
    """Read and parse the split file.

    Args:
        path: The JSON split file.

    Returns:
        ``(content, spec)``: the file's bytes (for the fingerprint) and its JSON object.

    Raises:
        UsageError: When the file is missing, is not valid JSON or does not hold an object.
    """
    if not path.is_file():
        raise UsageError(f"nifti: split file {path} not found; expected layout: {LAYOUT}")
    content = path.read_bytes()
    try:
        spec = json.loads(content)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UsageError(
            f"nifti: split file {path} is not valid JSON ({error}); expected layout: {LAYOUT}"
        ) from None
    if not isinstance(spec, dict):
        raise UsageError(f"nifti: split file {path} must hold a JSON object; expected layout: {LAYOUT}")
    return content, spec


def class_names_of(configured: Sequence[str], spec: Mapping[str, Any], path: Path) -> tuple[str, ...]:
    """The class names, background first: the ``class_names`` setting, else the file's ``labels``.

    Args:
        configured: The ``class_names`` setting (empty: read them from the split file).
        spec: The parsed split file.
        path: The split file, for messages.

    Raises:
        UsageError: When neither names the classes, or ``labels`` is not a gapless mapping of
            at least two class indices to names.
    """
    if configured:
        return tuple(configured)
    labels = spec.get("labels")
    if labels is None:
        raise UsageError(
            f'nifti: split file {path} has no "labels" and the class_names setting is empty; add '
            '"labels": {"0": "background", "1": ...} to it or set class_names=background,...'
        )
    try:
        if not isinstance(labels, dict):
            raise ValueError
        names = {int(key): str(value) for key, value in labels.items()}
    except (TypeError, ValueError):
        raise UsageError(
            f'nifti: "labels" in {path} must map class indices to names, like '
            '{"0": "background", "1": "spleen"}'
        ) from None
    if sorted(names) != list(range(len(names))) or len(names) < 2:
        raise UsageError(
            f'nifti: "labels" in {path} must number at least two classes 0, 1, 2... without gaps, '
            f"got indices {sorted(names)}"
        )
    return tuple(names[index] for index in range(len(names)))


def has_labelled_test(spec: Mapping[str, Any], path: Path) -> bool:
    """Whether ``test`` lists labelled pairs; unlabelled test images (BTCV) are ignored.

    Raises:
        UsageError: When ``test`` is not a list, or only some of its entries have a label.
    """
    entries = spec.get("test")
    if not entries:
        return False
    if not isinstance(entries, list):
        raise UsageError(f'nifti: "test" in {path} must be a list; expected layout: {LAYOUT}')
    labelled = [isinstance(entry, dict) and "label" in entry for entry in entries]
    if any(labelled) and not all(labelled):
        raise UsageError(f'nifti: some "test" entries in {path} have a "label" and some not')
    return all(labelled)


def split_pairs(spec: Mapping[str, Any], key: str, data_dir: Path, path: Path) -> list[tuple[Path, Path]]:
    """The ``(image, label)`` files listed under ``key``, each checked to exist inside ``data_dir``.

    Args:
        spec: The parsed split file.
        key: ``training``, ``validation`` or ``test``.
        data_dir: The folder the listed paths are relative to.
        path: The split file, for messages.

    Raises:
        UsageError: When the list is missing or empty, an entry is not an image/label pair, or
            a listed file is missing or lies outside ``data_dir``.
    """
    entries = spec.get(key)
    if not isinstance(entries, list) or not entries:
        found = "missing" if entries is None else "empty or not a list"
        raise UsageError(f'nifti: "{key}" in split file {path} is {found}; expected layout: {LAYOUT}')
    pairs = []
    for position, entry in enumerate(entries):
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("image"), str)
            and isinstance(entry.get("label"), str)
        ):
            raise UsageError(
                f'nifti: entry {position} of "{key}" in {path} must be {{"image": path, "label": path}}, '
                f"got {entry!r}"
            )
        pairs.append((_inside(data_dir, entry["image"], path), _inside(data_dir, entry["label"], path)))
    return pairs


def _inside(data_dir: Path, relative: str, split_path: Path) -> Path:
    """``data_dir / relative``, checked to exist and not to leave ``data_dir`` (even by a symlink)."""
    pure = PurePath(relative)
    if not relative or pure.is_absolute() or ".." in pure.parts:
        raise UsageError(
            f"nifti: {split_path} lists {relative!r}: paths must be relative to {data_dir}, without .."
        )
    path = data_dir / pure
    if not path.is_file():
        raise UsageError(
            f"nifti: {split_path} lists {relative!r}, but {path} does not exist or is not a file"
        )
    if not path.resolve().is_relative_to(data_dir.resolve()):
        raise UsageError(f"nifti: {path} (listed in {split_path}) leads outside {data_dir} through a symlink")
    return path


def file_identity(path: Path, data_dir: Path) -> list[Any]:
    """What the fingerprint records of a listed file: its path relative to ``data_dir``, size and mtime."""
    stat = path.stat()
    return [path.relative_to(data_dir).as_posix(), stat.st_size, stat.st_mtime_ns]
