"""``rsna-pneumonia``: the RSNA Pneumonia Detection Challenge release (DICOM), three classes.

Paper 001 (Xue et al., MICCAI 2019) uses "the chest X-ray dataset with 3 categories" of the
RSNA challenge and "randomly split the raw training set to two parts, with 21,000 images as
our training set and the left 6,000 images as test set". It gives no image size; its
reference code's embedded decoder reconstructs 224 × 224 inputs, and it applies no
augmentation to this dataset. The three categories are the ``class`` column of
``stage_2_detailed_class_info.csv``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medbench.api import Dataset, DatasetBundle
from medbench.api.toolkit import UsageError
from medbench_data._common import fingerprint, require_data_dir, stratified_split, validate_fractions
from medbench_data._files import Fit, LazyImages, files_digest, find_file, read_csv
from medbench_data.dicom_io import DicomReader, Window

CLASS_NAMES = ("Normal", "No Lung Opacity / Not Normal", "Lung Opacity")
CLASS_FILES = ("stage_2_detailed_class_info.csv", "stage_1_detailed_class_info.csv")
IMAGE_FOLDERS = ("stage_2_train_images", "stage_1_train_images")
LAYOUT = (
    "DATA_DIR/stage_2_detailed_class_info.csv (columns patientId, class with class one of "
    '"Normal", "No Lung Opacity / Not Normal", "Lung Opacity") and '
    "DATA_DIR/stage_2_train_images/<patientId>.dcm (the stage_1_ names are accepted too)"
)
PAPER_TEST_FRACTION = 6000 / 27000
"""Paper 001's 6,000 test images out of 21,000 + 6,000."""


def read_classes(path: Path) -> dict[str, int]:
    """The class index of every patient in a detailed-class-info CSV, one entry per patient.

    A patient with several boxes has several rows; they must agree.

    Raises:
        UsageError: On a missing column, an unknown class, conflicting rows or a patientId that
            is not a plain file name (``../x``, ``/etc/x``), naming the file.
    """
    rows = read_csv(path, ("patientId", "class"), "rsna-pneumonia", LAYOUT)
    index = {name: position for position, name in enumerate(CLASS_NAMES)}
    classes: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        patient, name = row["patientId"], row["class"]
        if not patient:
            raise UsageError(f"rsna-pneumonia: {path} line {line} has no patientId")
        if patient in {".", ".."} or any(char in patient for char in "/\\\0"):
            raise UsageError(
                f"rsna-pneumonia: {path} line {line}: patientId {patient!r} is not a file name "
                "(no /, \\ or ..); it names <patientId>.dcm in the image folder"
            )
        if name not in index:
            raise UsageError(
                f"rsna-pneumonia: {path} line {line}: unknown class {name!r}; expected one of "
                + ", ".join(map(repr, CLASS_NAMES))
            )
        if classes.setdefault(patient, index[name]) != index[name]:
            raise UsageError(
                f"rsna-pneumonia: {path} gives patient {patient} two classes, "
                f"{CLASS_NAMES[classes[patient]]!r} and {name!r} (line {line})"
            )
    if not classes:
        raise UsageError(f"rsna-pneumonia: {path} lists no patients; expected layout: {LAYOUT}")
    return classes


class RSNAPneumonia(Dataset):
    """RSNA Pneumonia Detection Challenge chest radiographs in three classes (paper 001).

    Classes (in this order): ``Normal``, ``No Lung Opacity / Not Normal``, ``Lung Opacity``,
    from ``stage_2_detailed_class_info.csv``; a patient listed on several rows (one per
    opacity box) is one image. Every patient's ``<patientId>.dcm`` in
    ``stage_2_train_images`` is read with :mod:`medbench_data.dicom_io` (Modality LUT,
    MONOCHROME1 inverted) and windowed to [0, 1] with ``window`` (``bits`` by default: the
    release stores 8-bit pixels, so this is ``pixel / 255``, as a PNG export gives), then
    resized to ``image_size`` (224, the size paper 001's reference code works at). The paper
    splits the training release at random into 21,000 training and 6,000 test images (27,000
    in all, while stage 2 has 26,684 patients); the split here keeps that ratio
    (``test_fraction`` = 6000/27000), stratified by class, and takes a validation split, which
    the paper does not have, from the rest. No class balancing (the paper balances only its
    skin dataset).
    """

    name = "rsna-pneumonia"
    description = "RSNA Pneumonia Detection Challenge DICOMs, 3 classes as in paper 001 (--data-dir)"
    task = "classification"
    needs_data_dir = True
    layout = LAYOUT

    @dataclass(frozen=True)
    class Settings:
        """Settings of ``rsna-pneumonia``.

        Attributes:
            image_size: Height and width after resizing (8 to 1024); 224 as paper 001's code.
            window: How pixel values map to [0, 1]: ``bits`` (the stored range: ``/255``),
                ``minmax``, ``file``, ``LOW,HIGH`` or ``center=C,width=W``.
            fit: ``stretch`` non-square images to the square, or ``crop`` their central square.
            val_fraction: Share of each class in the validation split (not in the paper).
            test_fraction: Share of each class in the test split (paper: 6,000 of 27,000).
            max_per_class: Keep at most this many patients per class (0: all), chosen by seed.
        """

        image_size: int = 224
        window: str = "bits"
        fit: Fit = "stretch"
        val_fraction: float = 0.05
        test_fraction: float = PAPER_TEST_FRACTION
        max_per_class: int = 0

        def validate(self) -> None:
            if not 8 <= self.image_size <= 1024:
                raise ValueError(f"image_size must be in [8, 1024], got {self.image_size}")
            if self.max_per_class < 0:
                raise ValueError("max_per_class must be >= 0")
            Window.parse(self.window)
            validate_fractions(self.val_fraction, self.test_fraction)

    def load(self, data_dir: Path | None, seed: int) -> DatasetBundle:
        data_dir = require_data_dir(data_dir, self.name, LAYOUT)
        settings: RSNAPneumonia.Settings = self.settings
        try:
            window = Window.parse(settings.window)
        except ValueError as error:
            raise UsageError(f"dataset 'rsna-pneumonia': {error}") from None
        class_file = find_file(data_dir, CLASS_FILES, self.name, LAYOUT)
        images = next((data_dir / name for name in IMAGE_FOLDERS if (data_dir / name).is_dir()), None)
        if images is None:
            raise UsageError(
                f"rsna-pneumonia: {' or '.join(IMAGE_FOLDERS)} not found in {data_dir}; "
                f"expected layout: {LAYOUT}"
            )
        classes = read_classes(class_file)
        patients = sorted(classes)
        labels = np.asarray([classes[p] for p in patients], dtype=np.int64)
        if settings.max_per_class:
            rng = np.random.default_rng([seed, 0x75A])
            keep = []
            for cls in range(len(CLASS_NAMES)):
                members = np.flatnonzero(labels == cls)
                if len(members) > settings.max_per_class:
                    members = np.sort(rng.choice(members, settings.max_per_class, replace=False))
                keep.append(members)
            chosen = np.sort(np.concatenate(keep))
            patients = [patients[i] for i in chosen]
            labels = labels[chosen]
        present = sorted(set(labels.tolist()))
        if len(present) < 2:
            raise UsageError(f"rsna-pneumonia: {class_file} lists only one class; need at least two")
        paths = [images / f"{patient}.dcm" for patient in patients]
        files = files_digest(paths, data_dir, self.name, class_file)
        train, val, test = stratified_split(labels, settings.val_fraction, settings.test_fraction, seed)
        for name, part in (("train", train), ("val", val), ("test", test)):
            if len(part) == 0:
                raise UsageError(
                    f"rsna-pneumonia: {class_file} lists too few patients for a non-empty {name} split"
                )
        reader = DicomReader(window)
        labels_t = torch.from_numpy(labels)
        splits = [
            LazyImages([paths[i] for i in part], labels_t[part], reader, settings.image_size, settings.fit)
            for part in (train, val, test)
        ]
        for split in splits:
            split.probe()
        return DatasetBundle(
            train=splits[0],
            val=splits[1],
            test=splits[2],
            class_names=CLASS_NAMES,
            input_shape=(1, settings.image_size, settings.image_size),
            modality="xray",
            fingerprint=fingerprint(
                self.name, settings, [labels, train, val, test], {"seed": seed, "files": files}
            ),
        )
