"""``chestxray14``: NIH ChestX-ray14 as released, the five observations it shares with CheXpert.

Paper 002 uses ChestX-ray14 with the same five binary heads as CheXpert (Atelectasis,
Cardiomegaly, Consolidation, Edema, Pleural Effusion; ChestX-ray14 calls the last one
``Effusion``) and the same 320 × 320 input.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medbench.api import Dataset, DatasetBundle
from medbench.api.toolkit import UsageError
from medbench_data._common import require_data_dir
from medbench_data._files import (
    Fit,
    files_digest,
    find_file,
    official_test_bundle,
    read_csv,
    read_lines,
)
from medbench_data.chexpert import OBSERVATIONS

ENTRY_FILES = ("Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv")
FINDING_NAMES = {name: name for name in OBSERVATIONS} | {"Effusion": "Pleural Effusion"}
RELEASE_FINDINGS = frozenset(
    {
        "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
        "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening",
        "Hernia", "No Finding",
    }
)  # fmt: skip
"""The fourteen findings of the release and ``No Finding``: any other value is an error."""
LAYOUT = (
    "DATA_DIR/Data_Entry_2017.csv (columns Image Index, Finding Labels like Atelectasis|Effusion or "
    "No Finding, Patient ID), DATA_DIR/train_val_list.txt, DATA_DIR/test_list.txt and the PNG images "
    "under DATA_DIR/images/ or DATA_DIR/images_0xx/images/"
)


def finding_targets(findings: str) -> np.ndarray:
    """The ``float32`` 0/1 vector over the five observations of a ``Finding Labels`` value."""
    targets = np.zeros(len(OBSERVATIONS), dtype=np.float32)
    for finding in findings.split("|"):
        name = FINDING_NAMES.get(finding.strip())
        if name is not None:
            targets[OBSERVATIONS.index(name)] = 1.0
    return targets


def check_findings(names: list[str], entries: dict[str, dict[str, str]], entry_file: Path) -> None:
    """Check that the ``Finding Labels`` of these images name only findings of the release.

    Raises:
        UsageError: On an empty value or an unknown finding (a typo such as ``Efusion`` would
            otherwise silently count as no finding), naming the file and the image.
    """
    for name in names:
        findings = entries[name]["Finding Labels"]
        unknown = [f.strip() for f in findings.split("|") if f.strip() not in RELEASE_FINDINGS]
        if unknown:
            raise UsageError(
                f"chestxray14: {entry_file} gives {name} the Finding Labels {findings!r}, with the unknown "
                f"finding {unknown[0]!r}; known: {', '.join(sorted(RELEASE_FINDINGS))}"
            )


def image_index(data_dir: Path) -> tuple[dict[str, Path], list[Path]]:
    """Every PNG under ``images/`` and ``images_*/images/`` (or ``images_*/``), by file name.

    Returns:
        ``(index, folders)``: file name → path, and the folders searched.
    """
    candidates = [data_dir / "images", *sorted(data_dir.glob("images_*"))]
    folders = []
    for candidate in candidates:
        if (candidate / "images").is_dir():
            folders.append(candidate / "images")
        elif candidate.is_dir():
            folders.append(candidate)
    index: dict[str, Path] = {}
    for folder in folders:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.lower().endswith(".png") and not entry.name.startswith("."):
                    index.setdefault(entry.name, Path(entry.path))
    return index, folders


class ChestXray14(Dataset):
    """NIH ChestX-ray14 radiographs with five multi-label targets, on the official split.

    ``train_val_list.txt`` gives the training split and, holding out ``val_fraction`` of its
    patients, the validation split; ``test_list.txt`` gives the test split, in an order
    shuffled by the seed. ``Finding Labels`` (``|``-separated; ``No Finding`` has none)
    become ``float32`` 0/1 vectors over Atelectasis, Cardiomegaly, Consolidation, Edema,
    Pleural Effusion (``Effusion``), the class names and order of ``chexpert``
    (``multilabel=True``); the other nine findings are ignored. Images are read when an item
    is, as grayscale in [0, 1] (the few RGBA files too), resized to ``image_size`` (320 as
    in paper 002).
    """

    name = "chestxray14"
    description = (
        "NIH ChestX-ray14 release, the 5 CheXpert observations, multi-label (paper 002) (--data-dir)"
    )
    task = "classification"
    needs_data_dir = True
    layout = LAYOUT

    @dataclass(frozen=True)
    class Settings:
        """Settings of ``chestxray14``.

        Attributes:
            image_size: Height and width after resizing (8 to 1024); 320 as paper 002.
            fit: ``stretch`` non-square images to the square, or ``crop`` their central square.
            val_fraction: Share of the patients of ``train_val_list.txt`` held out for validation.
            train_fraction: Random share of the remaining training images to keep, by seed.
            skip_missing: Drop listed images whose PNG is absent (a partial download of the
                twelve image archives) instead of failing.
        """

        image_size: int = 320
        fit: Fit = "stretch"
        val_fraction: float = 0.1
        train_fraction: float = 1.0
        skip_missing: bool = False

        def validate(self) -> None:
            if not 8 <= self.image_size <= 1024:
                raise ValueError(f"image_size must be in [8, 1024], got {self.image_size}")
            if not 0.0 < self.val_fraction < 1.0:
                raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
            if not 0.0 < self.train_fraction <= 1.0:
                raise ValueError(f"train_fraction must be in (0, 1], got {self.train_fraction}")

    def load(self, data_dir: Path | None, seed: int) -> DatasetBundle:
        data_dir = require_data_dir(data_dir, self.name, LAYOUT)
        settings: ChestXray14.Settings = self.settings
        entry_file = find_file(data_dir, ENTRY_FILES, self.name, LAYOUT)
        rows = read_csv(entry_file, ("Image Index", "Finding Labels"), self.name, LAYOUT)
        entries = {row["Image Index"]: row for row in rows}
        index, folders = image_index(data_dir)
        if not folders:
            raise UsageError(
                f"chestxray14: no images/ or images_0xx/ folder in {data_dir}; expected layout: {LAYOUT}"
            )

        lists = {}
        for list_name in ("train_val_list.txt", "test_list.txt"):
            list_path = find_file(data_dir, (list_name,), self.name, LAYOUT)
            names = read_lines(list_path, self.name)
            unknown = [name for name in names if name not in entries]
            if unknown:
                raise UsageError(
                    f"chestxray14: {list_path} lists {unknown[0]}, which {entry_file.name} does not describe"
                    + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
                )
            absent = [name for name in names if name not in index]
            if absent and not settings.skip_missing:
                searched = ", ".join(str(folder) for folder in folders)
                more = f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""
                raise UsageError(
                    f"chestxray14: image {absent[0]} listed in {list_path} is in none of {searched}{more}; "
                    "add the missing archives or set skip_missing=true"
                )
            names = [name for name in names if name in index]
            check_findings(names, entries, entry_file)
            targets = (
                np.stack([finding_targets(entries[name]["Finding Labels"]) for name in names])
                if names
                else (np.zeros((0, len(OBSERVATIONS)), np.float32))
            )
            lists[list_name] = (names, targets)

        names, targets = lists["train_val_list.txt"]
        test_names, test_targets = lists["test_list.txt"]
        files = [index[name] for name in names]
        test_files = [index[name] for name in test_names]
        return official_test_bundle(
            self.name,
            settings,
            seed,
            (files, targets, [entries[name].get("Patient ID") or name.split("_")[0] for name in names]),
            (test_files, test_targets),
            class_names=OBSERVATIONS,
            files=files_digest(files + test_files, data_dir, self.name, data_dir),
            hint=(
                " (train_val_list.txt needs images of at least two patients,"
                " test_list.txt at least one image)"
            ),
            train_fraction=settings.train_fraction,
            multilabel=True,
        )
