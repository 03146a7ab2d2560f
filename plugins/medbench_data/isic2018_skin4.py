"""``isic2018-skin4``: the SKIN4 subset of ISIC 2018 Task 3 (MEL, NV, BCC, BKL), as paper 001 uses it."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medbench.api import Dataset, DatasetBundle
from medbench.api.toolkit import UsageError
from medbench_data._folders import (
    FolderSettings,
    Source,
    build_bundle,
    downsample_classes,
    find_root,
    resolve,
)

INPUT: Source = ("ISIC2018_Task3_Training_Input",)
GROUND_TRUTH: Source = (
    "ISIC2018_Task3_Training_GroundTruth/ISIC2018_Task3_Training_GroundTruth.csv",
    "ISIC2018_Task3_Training_GroundTruth.csv",
)
ALL_CLASSES = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")
SKIN4 = ("MEL", "NV", "BCC", "BKL")
LAYOUT = (
    "DATA_DIR/ISIC2018_Task3_Training_Input/ISIC_<id>.jpg and "
    "DATA_DIR/ISIC2018_Task3_Training_GroundTruth/ISIC2018_Task3_Training_GroundTruth.csv "
    "(columns image,MEL,NV,BCC,AKIEC,BKL,DF,VASC, one-hot); DATA_DIR may also be a folder above them"
)
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class ISIC2018Skin4(Dataset):
    """Dermoscopic images of ISIC 2018 Task 3, 4 classes: ``MEL``, ``NV``, ``BCC``, ``BKL``.

    Reads the Task 3 training release: the images in ``ISIC2018_Task3_Training_Input/`` and
    their one-hot diagnoses in ``ISIC2018_Task3_Training_GroundTruth.csv``. As paper 001
    (Xue et al., MICCAI 2019, section 3.1) describes SKIN4, only the four classes with more
    than 500 images are kept (MEL, NV, BCC, BKL, labels 0-3 in that order) and NV is
    reduced to 1,500 images chosen at random with the seed ("1,500 images of NV class were
    randomly selected from 6,705, while keeping the other classes of data unchanged").
    Images are RGB, resized (shorter side) and center-cropped to 224 × 224 as the
    reference code's evaluation transform (``Resize(224)``, then a 224 crop). The test
    split takes 20 % of each class: the paper splits "training set and test set with the
    rate around 5:1", and its Table 1 accuracies are multiples of 1/846, which is 20 % of
    each class (223 + 300 + 103 + 220). The paper has no validation split; medbench holds
    out 10 % of each class for choosing the best epoch.
    """

    name = "isic2018-skin4"
    description = "ISIC 2018 Task 3 SKIN4 subset (MEL, NV, BCC, BKL; NV sampled to 1500), RGB (paper 001)"
    task = "classification"
    needs_data_dir = True
    layout = LAYOUT

    @dataclass(frozen=True)
    class Settings(FolderSettings):
        """Settings of ``isic2018-skin4``.

        Attributes:
            image_size: Side after resizing the shorter side and center-cropping (8 to 1024).
            channels: 3 (RGB, as the paper) or 1 (grayscale).
            val_fraction: Share of each class in the validation split.
            test_fraction: Share of each class in the test split (the paper: 1 in 5).
            preload_mb: Decode every image at load time when they take at most this many MiB;
                at the defaults SKIN4 takes about 640 MiB and is read lazily.
            nv_samples: How many NV images to keep, chosen at random with the seed (0: all).
        """

        channels: int = 3
        val_fraction: float = 0.1
        test_fraction: float = 0.2
        nv_samples: int = 1500

        def validate(self) -> None:
            """Raise ValueError on an out-of-range setting."""
            super().validate()
            if self.nv_samples < 0:
                raise ValueError(f"nv_samples must be >= 0 (0 keeps all), got {self.nv_samples}")

    def load(self, data_dir: Path | None, seed: int) -> DatasetBundle:
        if data_dir is None:
            raise UsageError(f"{self.name} needs --data-dir; expected layout: {LAYOUT}")
        root = find_root(data_dir, [INPUT, GROUND_TRUTH], owner=self.name, layout=LAYOUT)
        input_dir = resolve(root, INPUT)
        table = resolve(root, GROUND_TRUTH)
        assert input_dir is not None and table is not None
        if not input_dir.is_dir():
            raise UsageError(f"{self.name}: {input_dir} is not a directory; expected layout: {LAYOUT}")
        paths, labels = self._samples(input_dir, table)
        if self.settings.nv_samples:
            kept = downsample_classes(labels, {SKIN4.index("NV"): self.settings.nv_samples}, seed)
            paths, labels = [paths[i] for i in kept], labels[kept]
        return build_bundle(
            owner=self.name,
            settings=self.settings,
            root=root,
            paths=paths,
            labels=labels,
            class_names=SKIN4,
            seed=seed,
            modality="dermoscopy",
        )

    def _samples(self, input_dir: Path, table: Path) -> tuple[list[Path], np.ndarray]:
        images = {
            p.stem: p
            for p in sorted(input_dir.iterdir())
            if p.suffix.lower() in _IMAGE_SUFFIXES and not p.name.startswith(".")
        }
        if not images:
            raise UsageError(f"{self.name}: {input_dir} has no JPEG/PNG images; expected layout: {LAYOUT}")
        paths: list[Path] = []
        labels: list[int] = []
        for line, image_id, diagnosis in self._rows(table):
            if diagnosis not in SKIN4:
                continue
            path = images.get(image_id)
            if path is None:
                raise UsageError(
                    f"{self.name}: {table} line {line} lists {image_id}, not found in {input_dir}"
                )
            paths.append(path)
            labels.append(SKIN4.index(diagnosis))
        if not paths:
            raise UsageError(
                f"{self.name}: {table} lists no MEL, NV, BCC or BKL image; expected layout: {LAYOUT}"
            )
        return paths, np.asarray(labels, dtype=np.int64)

    def _rows(self, table: Path) -> list[tuple[int, str, str]]:
        """``(line, image id, diagnosis)`` of every row of the ground-truth CSV."""
        try:
            with table.open(newline="", encoding="utf-8-sig") as handle:
                reader = csv.reader(handle)
                header = [cell.strip() for cell in next(reader, [])]
                missing = [c for c in ("image", *ALL_CLASSES) if c not in header]
                if missing:
                    raise UsageError(
                        f"{self.name}: {table} lacks the columns {', '.join(missing)}; "
                        f"expected layout: {LAYOUT}"
                    )
                columns = [header.index(c) for c in ALL_CLASSES]
                rows = []
                for line, row in enumerate(reader, start=2):
                    if not row or not "".join(row).strip():
                        continue
                    try:
                        hot = [float(row[c]) >= 0.5 for c in columns]
                    except (IndexError, ValueError):
                        raise UsageError(
                            f"{self.name}: {table} line {line} is not image,MEL,...,VASC with 0/1 values"
                        ) from None
                    if sum(hot) != 1:
                        raise UsageError(
                            f"{self.name}: {table} line {line} is not one-hot ({sum(hot)} classes)"
                        )
                    rows.append((line, row[header.index("image")].strip(), ALL_CLASSES[hot.index(True)]))
                return rows
        except (OSError, UnicodeDecodeError, csv.Error) as error:
            raise UsageError(f"{self.name}: cannot read {table}: {error}") from None
