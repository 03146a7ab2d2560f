"""``chexpert``: CheXpert v1.0 (or its -small version) as released, five observations, multi-label.

Paper 002 (Morra et al., ICPR 2020) focuses on "five pathological cues: Atelectasis,
Cardiomegaly, Consolidation, Edema and Pleural Effusion" and handles CheXpert's uncertain
labels per observation: "For each observation, we applied the best policy based on previous
results: Atelectasis (U-Ones), Cardiomegaly (U-Zeros), Consolidation (U-Zeros), Edema
(U-Ones), and Pleural Effusion (U-Ones)". Its networks take 320 × 320 inputs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from medbench.api import Dataset, DatasetBundle
from medbench.api.toolkit import UsageError
from medbench_data._common import require_data_dir
from medbench_data._files import (
    Fit,
    ReleasePaths,
    files_digest,
    official_test_bundle,
    read_csv,
    release_root,
)

OBSERVATIONS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
"""The five CheXpert competition observations, in the order of the label vectors."""
PAPER_POLICIES: Mapping[str, Literal["ones", "zeros"]] = {
    "Atelectasis": "ones",
    "Cardiomegaly": "zeros",
    "Consolidation": "zeros",
    "Edema": "ones",
    "Pleural Effusion": "ones",
}
"""Paper 002's uncertainty policy per observation (U-Ones / U-Zeros)."""
RELEASE_FOLDERS = ("CheXpert-v1.0-small", "CheXpert-v1.0")
LAYOUT = (
    "DATA_DIR/train.csv and DATA_DIR/valid.csv of CheXpert-v1.0(-small), with the columns Path "
    "(e.g. CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg, relative to the parent of "
    "DATA_DIR or to DATA_DIR), Frontal/Lateral and Atelectasis, Cardiomegaly, Consolidation, Edema, "
    "Pleural Effusion holding 1.0, 0.0, -1.0 (uncertain) or blank"
)
_VALUES = {"1": 1.0, "1.0": 1.0, "0": 0.0, "0.0": 0.0, "-1": -1.0, "-1.0": -1.0, "": np.nan}
_PATIENT = re.compile(r"patient\d+")


def parse_observations(rows: Sequence[Mapping[str, str]], path: Path) -> np.ndarray:
    """The raw labels of the five observations: ``(N, 5)`` with 1, 0, -1 (uncertain), NaN (blank).

    Raises:
        UsageError: On any other value, naming the file, the line and the column.
    """
    raw = np.empty((len(rows), len(OBSERVATIONS)), dtype=np.float32)
    for position, row in enumerate(rows):
        for column, observation in enumerate(OBSERVATIONS):
            text = row.get(observation, "")
            try:
                raw[position, column] = _VALUES[text]
            except KeyError:
                raise UsageError(
                    f"chexpert: {path} line {position + 2}, column {observation!r}: {text!r} is not "
                    "1.0, 0.0, -1.0 or blank"
                ) from None
    return raw


def policies_for(uncertainty: str) -> tuple[Literal["ones", "zeros"], ...]:
    """The policy of each observation: paper 002's, or one policy for all."""
    if uncertainty == "paper":
        return tuple(PAPER_POLICIES[name] for name in OBSERVATIONS)
    if uncertainty in ("ones", "zeros"):
        return (uncertainty,) * len(OBSERVATIONS)  # type: ignore[return-value]
    raise ValueError(f"uncertainty must be paper, ones or zeros, got {uncertainty!r}")


def apply_policies(raw: np.ndarray, policies: Sequence[Literal["ones", "zeros"]]) -> np.ndarray:
    """Binary targets from raw CheXpert labels: uncertain (-1) → 1 (U-Ones) or 0 (U-Zeros)
    per observation, blank → 0, positive → 1, negative → 0.

    Returns:
        ``(N, K)`` ``float32`` 0/1 targets.
    """
    targets = np.where(raw == 1.0, 1.0, 0.0).astype(np.float32)
    for column, policy in enumerate(policies):
        if policy == "ones":
            targets[raw[:, column] == -1.0, column] = 1.0
    return targets


def _patient(relative: str) -> str:
    match = _PATIENT.search(relative)
    if match:
        return match.group(0)
    parts = relative.replace("\\", "/").split("/")
    return parts[-3] if len(parts) >= 3 else relative


def _is_frontal(row: Mapping[str, str]) -> bool:
    view = row.get("Frontal/Lateral", "")
    if view:
        return view.lower() == "frontal"
    return "frontal" in row["Path"].rsplit("/", 1)[-1].lower()


class CheXpert(Dataset):
    """CheXpert chest radiographs with the five competition observations as multi-label targets.

    ``train.csv`` gives the training split and, holding out ``val_fraction`` of its patients,
    the validation split; ``valid.csv`` (the public validation set; the official test set is
    not released) is the test split, in an order shuffled by the seed. Labels are ``float32``
    vectors over Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural Effusion
    (``multilabel=True``): positive → 1, negative and blank → 0, uncertain (-1) → 1 or 0 as
    ``uncertainty`` says (``paper``: U-Ones for Atelectasis, Edema, Pleural Effusion, U-Zeros
    for Cardiomegaly, Consolidation). Images are read when an item is, as grayscale in
    [0, 1], resized to ``image_size`` (320 as in paper 002).

    U-Ignore (masking uncertain labels out of the loss) needs a masked loss the harness does
    not have, so it is not offered.
    """

    name = "chexpert"
    description = "CheXpert v1.0(-small) CSV release, 5 observations, multi-label (paper 002) (--data-dir)"
    task = "classification"
    needs_data_dir = True
    layout = LAYOUT

    @dataclass(frozen=True)
    class Settings:
        """Settings of ``chexpert``.

        Attributes:
            image_size: Height and width after resizing (8 to 1024); 320 as paper 002.
            uncertainty: Uncertain labels: ``paper`` (per observation, as paper 002), ``ones``
                (U-Ones for all) or ``zeros`` (U-Zeros for all).
            frontal_only: Keep frontal views only (paper 002 does not restrict the views).
            fit: ``stretch`` non-square images to the square, or ``crop`` their central square.
            val_fraction: Share of the patients of ``train.csv`` held out for validation.
            train_fraction: Random share of the remaining training images to keep (paper
                002's small-data study uses 0.1 down to 0.001), chosen by seed.
        """

        image_size: int = 320
        uncertainty: Literal["paper", "ones", "zeros"] = "paper"
        frontal_only: bool = False
        fit: Fit = "stretch"
        val_fraction: float = 0.05
        train_fraction: float = 1.0

        def validate(self) -> None:
            if not 8 <= self.image_size <= 1024:
                raise ValueError(f"image_size must be in [8, 1024], got {self.image_size}")
            if not 0.0 < self.val_fraction < 1.0:
                raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
            if not 0.0 < self.train_fraction <= 1.0:
                raise ValueError(f"train_fraction must be in (0, 1], got {self.train_fraction}")

    def load(self, data_dir: Path | None, seed: int) -> DatasetBundle:
        data_dir = require_data_dir(data_dir, self.name, LAYOUT)
        settings: CheXpert.Settings = self.settings
        root = release_root(data_dir, "train.csv", RELEASE_FOLDERS)
        resolver = ReleasePaths(root, self.name, LAYOUT)
        policies = policies_for(settings.uncertainty)
        tables = {}
        for csv_name in ("train.csv", "valid.csv"):
            path = root / csv_name
            if not path.is_file():
                raise UsageError(f"chexpert: {csv_name} not found in {root}; expected layout: {LAYOUT}")
            rows = read_csv(path, ("Path", *OBSERVATIONS), self.name, LAYOUT)
            if settings.frontal_only:
                rows = [row for row in rows if _is_frontal(row)]
            if not rows:
                raise UsageError(f"chexpert: {path} lists no images{' (frontal)' * settings.frontal_only}")
            targets = apply_policies(parse_observations(rows, path), policies)
            files = [resolver.resolve(row["Path"], path) for row in rows]
            tables[csv_name] = (rows, targets, files)

        rows, targets, files = tables["train.csv"]
        _, test_targets, test_files = tables["valid.csv"]
        return official_test_bundle(
            self.name,
            settings,
            seed,
            (files, targets, [_patient(row["Path"]) for row in rows]),
            (test_files, test_targets),
            class_names=OBSERVATIONS,
            files=files_digest(files + test_files, root.parent, self.name, root),
            hint=" (train.csv needs at least two patients)",
            train_fraction=settings.train_fraction,
            multilabel=True,
        )
