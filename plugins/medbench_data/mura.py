"""``mura-shoulder``: the shoulder radiographs of MURA v1.1 as released, normal vs abnormal.

Paper 002: "For our analysis we considered only one anatomical part, the shoulder,
corresponding to 8,379 images (2,694 patients)" (the shoulder images of MURA's training
set), as "a simple binary classification problem", at the 320 × 320 input of its networks.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from medbench.api import Dataset, DatasetBundle
from medbench.api.toolkit import UsageError
from medbench_data._common import require_data_dir
from medbench_data._files import (
    Fit,
    ReleasePaths,
    files_digest,
    official_test_bundle,
    read_lines,
    release_root,
)

BODY_PART = "XR_SHOULDER"
CLASS_NAMES = ("normal", "abnormal")
RELEASE_FOLDERS = ("MURA-v1.1",)
LAYOUT = (
    "DATA_DIR/train_image_paths.csv and DATA_DIR/valid_image_paths.csv of MURA-v1.1 (one path per line, "
    "no header, e.g. MURA-v1.1/train/XR_SHOULDER/patient00001/study1_positive/image1.png, relative to "
    "the parent of DATA_DIR or to DATA_DIR); the study folder ends in _positive (abnormal) or _negative"
)


def read_image_paths(path: Path) -> list[str]:
    """The image paths listed in a MURA ``*_image_paths.csv`` (first field of each line).

    Raises:
        UsageError: When the file cannot be read, naming it.
    """
    lines = read_lines(path, "mura-shoulder")
    try:
        fields = [row[0].strip() for row in csv.reader(lines) if row and row[0].strip()]
    except csv.Error as error:
        raise UsageError(f"mura-shoulder: cannot read {path}: {error}") from None
    if fields and fields[0].lower() in {"path", "image", "image_path", "filename"}:
        fields = fields[1:]  # a header row some copies add
    return fields


def study_label(relative: str, listed_in: Path) -> int:
    """1 (abnormal) for a study folder ending in ``_positive``, 0 for ``_negative``.

    Raises:
        UsageError: For any other study folder, naming the file and the path.
    """
    parts = PurePosixPath(relative.replace("\\", "/")).parts
    study = parts[-2] if len(parts) >= 2 else ""
    if study.endswith("_positive"):
        return 1
    if study.endswith("_negative"):
        return 0
    raise UsageError(
        f"mura-shoulder: {listed_in} lists {relative!r}, whose study folder {study!r} ends in neither "
        "_positive nor _negative"
    )


class MURAShoulder(Dataset):
    """MURA v1.1 shoulder radiographs, ``normal`` (0) or ``abnormal`` (1).

    Only the paths under ``XR_SHOULDER`` are kept; the label of an image is its study's, from
    the ``_positive`` / ``_negative`` suffix of the study folder. ``train_image_paths.csv``
    gives the training split and, holding out ``val_fraction`` of its patients, the validation
    split; ``valid_image_paths.csv`` (MURA's public validation set; the test set is not
    released) is the test split, in an order shuffled by the seed. Images are read when an
    item is, as grayscale in [0, 1], resized to ``image_size`` (320 as in paper 002).
    """

    name = "mura-shoulder"
    description = "MURA v1.1 shoulder radiographs, normal vs abnormal (paper 002) (--data-dir)"
    task = "classification"
    needs_data_dir = True
    layout = LAYOUT

    @dataclass(frozen=True)
    class Settings:
        """Settings of ``mura-shoulder``.

        Attributes:
            image_size: Height and width after resizing (8 to 1024); 320 as paper 002.
            fit: ``stretch`` non-square images to the square, or ``crop`` their central square.
            val_fraction: Share of the training patients held out for validation.
        """

        image_size: int = 320
        fit: Fit = "stretch"
        val_fraction: float = 0.1

        def validate(self) -> None:
            if not 8 <= self.image_size <= 1024:
                raise ValueError(f"image_size must be in [8, 1024], got {self.image_size}")
            if not 0.0 < self.val_fraction < 1.0:
                raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")

    def load(self, data_dir: Path | None, seed: int) -> DatasetBundle:
        data_dir = require_data_dir(data_dir, self.name, LAYOUT)
        settings: MURAShoulder.Settings = self.settings
        root = release_root(data_dir, "train_image_paths.csv", RELEASE_FOLDERS)
        resolver = ReleasePaths(root, self.name, LAYOUT)
        tables = {}
        for csv_name in ("train_image_paths.csv", "valid_image_paths.csv"):
            path = root / csv_name
            if not path.is_file():
                raise UsageError(f"mura-shoulder: {csv_name} not found in {root}; expected layout: {LAYOUT}")
            listed = [p for p in read_image_paths(path) if BODY_PART in PurePosixPath(p).parts]
            if not listed:
                raise UsageError(
                    f"mura-shoulder: {path} lists no {BODY_PART} image; expected layout: {LAYOUT}"
                )
            labels = np.asarray([study_label(p, path) for p in listed], dtype=np.int64)
            files = [resolver.resolve(p, path) for p in listed]
            tables[csv_name] = (listed, labels, files)

        listed, labels, files = tables["train_image_paths.csv"]
        patients = [PurePosixPath(p).parts[-3] if len(PurePosixPath(p).parts) >= 3 else p for p in listed]
        _, test_labels, test_files = tables["valid_image_paths.csv"]
        return official_test_bundle(
            self.name,
            settings,
            seed,
            (files, labels, patients),
            (test_files, test_labels),
            class_names=CLASS_NAMES,
            files=files_digest(files + test_files, root.parent, self.name, root),
            hint=" (train_image_paths.csv needs shoulder images of at least two patients)",
        )
