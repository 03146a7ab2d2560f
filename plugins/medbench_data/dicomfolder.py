"""``dicom``: a local folder with one sub-folder of DICOM files per class (2D classification)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from medbench.api import Dataset, DatasetBundle
from medbench.api.toolkit import UsageError
from medbench_data._common import fingerprint, validate_fractions
from medbench_data._files import Fit, LazyImages, files_digest, stratified_group_split
from medbench_data.dicom_io import (
    DicomReader,
    Window,
    is_dicom_file,
    read_header,
    series_files,
    slice_order,
)

LAYOUT = (
    "DATA_DIR/<class name>/<image>.dcm (also .dicom, .ima or DICM-marked files without suffix), one "
    "sub-folder per class (at least two); with series=slices or series=middle also "
    "DATA_DIR/<class name>/<series folder>/<slice>.dcm"
)

DICOM_MODALITIES = {"CT": "ct", "MR": "mri", "CR": "xray", "DX": "xray", "US": "ultrasound"}
"""The bundle's ``modality`` for a DICOM ``Modality`` code; other codes are lowercased."""


def _modality_name(code: str) -> str:
    return DICOM_MODALITIES.get(code, code.lower())


@dataclass(frozen=True)
class _Item:
    path: Path
    label: int
    group: str
    modality: str


class DicomFolder(Dataset):
    """Single-frame DICOM images from a local folder, one sub-folder per class (names sorted).

    Pixels go through the Modality LUT (``RescaleSlope``/``RescaleIntercept``: Hounsfield
    units for CT), then through ``window`` to [0, 1] (``MONOCHROME1`` inverted), and are
    resized to ``image_size`` × ``image_size``; files are decoded when an item is read. The
    split into train / val / test is stratified by class and fixed by the seed.

    A folder inside a class folder is a **series** (the slices of one scan). By default it is
    rejected, because its slices are not independent images. With ``series=slices`` every
    slice is an item and a series goes whole to one split (no patient leaks between train and
    test; the fractions then count series and loose files); with ``series=middle`` the series
    gives one item, its middle slice in spatial order. Files other than DICOM are ignored.

    With a fixed window (``-175,250`` or ``center=40,width=400``) the bundle records it as
    ``intensity_window``, with ``intensity_unit="HU"`` when every file is CT, so that budgets
    can be given in HU.
    """

    name = "dicom"
    description = "Local folder of DICOM files, one sub-folder per class, windowed to [0, 1] (--data-dir)"
    task = "classification"
    needs_data_dir = True
    layout = LAYOUT

    @dataclass(frozen=True)
    class Settings:
        """Settings of ``dicom``.

        Attributes:
            image_size: Height and width after resizing (8 to 1024).
            window: How modality values map to [0, 1]: ``minmax`` (each image's range),
                ``file`` (the file's WindowCenter/WindowWidth), ``bits`` (the range of the
                stored bits), ``LOW,HIGH`` (e.g. ``-175,250`` HU) or ``center=C,width=W``.
            series: What a folder inside a class folder means: ``reject`` (an error),
                ``slices`` (each slice an item; a series stays in one split) or ``middle``
                (its middle slice).
            fit: ``stretch`` non-square images to the square, or ``crop`` their central square.
            val_fraction: Share of each class in the validation split.
            test_fraction: Share of each class in the test split.
            max_per_class: Keep at most this many files or series per class (0: all), by seed.
        """

        image_size: int = 224
        window: str = "minmax"
        series: Literal["reject", "slices", "middle"] = "reject"
        fit: Fit = "stretch"
        val_fraction: float = 0.15
        test_fraction: float = 0.15
        max_per_class: int = 0

        def validate(self) -> None:
            if not 8 <= self.image_size <= 1024:
                raise ValueError(f"image_size must be in [8, 1024], got {self.image_size}")
            if self.max_per_class < 0:
                raise ValueError("max_per_class must be >= 0")
            Window.parse(self.window)
            validate_fractions(self.val_fraction, self.test_fraction)

    def load(self, data_dir: Path | None, seed: int) -> DatasetBundle:
        if data_dir is None:
            raise UsageError(f"dicom needs --data-dir; expected layout: {LAYOUT}")
        settings: DicomFolder.Settings = self.settings
        try:
            window = Window.parse(settings.window)
        except ValueError as error:
            raise UsageError(f"dataset 'dicom': {error}") from None
        classes = self._class_folders(data_dir)
        rng = np.random.default_rng([seed, 0xD1C0])
        items: list[_Item] = []
        for label, folder in enumerate(classes):
            found = self._class_items(folder, label)
            groups = sorted({item.group for item in found})
            if settings.max_per_class and len(groups) > settings.max_per_class:
                kept = set(rng.choice(groups, settings.max_per_class, replace=False).tolist())
                found = [item for item in found if item.group in kept]
            items.extend(found)
        labels = np.asarray([item.label for item in items], dtype=np.int64)
        train, val, test = stratified_group_split(
            labels, [item.group for item in items], settings.val_fraction, settings.test_fraction, seed
        )
        for name, part in (("train", train), ("val", val), ("test", test)):
            if len(part) == 0:
                raise UsageError(
                    f"dicom: {data_dir} has too few files or series for a non-empty {name} split "
                    f"(val_fraction={settings.val_fraction}, test_fraction={settings.test_fraction})"
                )
        reader = DicomReader(window)
        labels_t = torch.from_numpy(labels)
        paths = [item.path for item in items]
        splits = [
            LazyImages([paths[i] for i in part], labels_t[part], reader, settings.image_size, settings.fit)
            for part in (train, val, test)
        ]
        for split in splits:
            split.probe()
        modalities = sorted({item.modality for item in items})
        all_ct = modalities == ["CT"]
        bounds = window.bounds
        digest = fingerprint(
            self.name,
            settings,
            [labels, train, val, test],
            {"seed": seed, "files": files_digest(paths, data_dir, self.name, data_dir)},
        )
        return DatasetBundle(
            train=splits[0],
            val=splits[1],
            test=splits[2],
            class_names=tuple(folder.name for folder in classes),
            input_shape=(1, settings.image_size, settings.image_size),
            modality=_modality_name(modalities[0]) if len(modalities) == 1 and modalities[0] else "dicom",
            fingerprint=digest,
            intensity_window=bounds,
            intensity_unit="HU" if bounds is not None and all_ct else "",
        )

    @staticmethod
    def _class_folders(root: Path) -> list[Path]:
        if not root.is_dir():
            raise UsageError(f"dicom: {root} is not a directory; expected layout: {LAYOUT}")
        classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if len(classes) < 2:
            found = "no class sub-folders" if not classes else "only one class folder"
            raise UsageError(f"dicom: {found} in {root}; expected layout: {LAYOUT}")
        return classes

    def _class_items(self, folder: Path, label: int) -> list[_Item]:
        mode = self.settings.series
        items = []
        for path in sorted(folder.iterdir()):
            if path.name.startswith("."):
                continue
            if path.is_dir():
                if mode == "reject":
                    raise UsageError(
                        f"dicom: {path} is a folder inside class folder {folder}: series folders are "
                        "rejected by default; set series=slices (each slice an item, a series stays in "
                        "one split) or series=middle (its middle slice), or move 2D files up"
                    )
                items.extend(self._series_items(path, label))
            elif is_dicom_file(path):
                modality = str(read_header(path).get("Modality", "") or "")
                items.append(_Item(path, label, path.relative_to(folder.parent).as_posix(), modality))
        if not items:
            raise UsageError(f"dicom: class folder {folder} has no DICOM files; expected layout: {LAYOUT}")
        return items

    def _series_items(self, folder: Path, label: int) -> list[_Item]:
        files = series_files(folder)
        if not files:
            raise UsageError(f"dicom: series folder {folder} has no DICOM files")
        headers = [read_header(path) for path in files]
        uids = sorted({str(h.get("SeriesInstanceUID", "") or "") for h in headers})
        if len(uids) > 1:
            raise UsageError(
                f"dicom: series folder {folder} holds {len(uids)} series ({', '.join(uids)}); "
                "keep one series per folder"
            )
        group = folder.relative_to(folder.parent.parent).as_posix()
        if self.settings.series == "middle":
            try:
                order, _, _ = slice_order(headers)
            except ValueError as error:
                raise UsageError(f"dicom: cannot order the slices of {folder}: {error}") from None
            middle = order[len(order) // 2]
            files, headers = [files[middle]], [headers[middle]]
        return [
            _Item(path, label, group, str(header.get("Modality", "") or ""))
            for path, header in zip(files, headers, strict=True)
        ]
