"""``rsna-pneumonia`` on a miniature copy of the challenge release (real DICOM files)."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from medbench.errors import UsageError
from medbench.testing import check_dataset
from medbench_data.rsna_pneumonia import CLASS_NAMES, PAPER_TEST_FRACTION, RSNAPneumonia


def _write_radiograph(path: Path, value: int, photometric: str = "MONOCHROME2") -> None:
    """An 8-bit chest radiograph as the challenge stores them (no rescale, no window)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.PatientID = path.stem
    pixels = np.full((24, 20), value, dtype=np.uint8)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)


PATIENTS = {
    "Normal": ["0004cfab", "00313ee0", "00322d4d", "003d8fa0", "00436515", "00569f44"],
    "No Lung Opacity / Not Normal": ["0100515c", "0107a3a8", "010ccb9f", "01126ba5", "0118ea81", "011d6f51"],
    "Lung Opacity": ["00436515a", "00704310", "00aecb01", "00c0b293", "00f08de1", "01027bc3"],
}
"""Six patients per class; each Lung Opacity patient has two rows (two boxes)."""


def _write_release(root: Path, extra_rows: list[tuple[str, str]] | None = None) -> Path:
    images = root / "stage_2_train_images"
    images.mkdir(parents=True)
    rows = []
    for index, (name, patients) in enumerate(PATIENTS.items()):
        for patient in patients:
            rows.append((patient, name))
            if name == "Lung Opacity":
                rows.append((patient, name))
            _write_radiograph(images / f"{patient}.dcm", 51 * (index + 1))
    rows.extend(extra_rows or [])
    with (root / "stage_2_detailed_class_info.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["patientId", "class"])
        writer.writerows(rows)
    return root


def _all_items(bundle: object) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [split[i] for split in (bundle.train, bundle.val, bundle.test) for i in range(len(split))]  # type: ignore[attr-defined]


def test_rsna_three_classes_deduplicated(tmp_path: Path) -> None:
    root = _write_release(tmp_path / "rsna")
    dataset = RSNAPneumonia().configured({"image_size": 16, "val_fraction": 0.2, "test_fraction": 0.2})
    bundle = check_dataset(dataset, root)
    assert bundle.class_names == CLASS_NAMES == ("Normal", "No Lung Opacity / Not Normal", "Lung Opacity")
    assert not bundle.multilabel and bundle.modality == "xray" and bundle.input_shape == (1, 16, 16)
    assert bundle.intensity_window is None
    items = _all_items(bundle)
    assert len(items) == 18, "24 CSV rows, 18 patients: one image each"
    assert Counter(int(label) for _, label in items) == {0: 6, 1: 6, 2: 6}
    for image, label in items:
        # the release's 8-bit pixels through the default "bits" window: value / 255
        assert torch.allclose(image, torch.full_like(image, 51 * (int(label) + 1) / 255), atol=1e-6)
    test_labels = {int(bundle.test[i][1]) for i in range(len(bundle.test))}
    assert test_labels == {0, 1, 2}, "stratified"
    assert RSNAPneumonia.Settings().test_fraction == pytest.approx(6000 / 27000) == PAPER_TEST_FRACTION
    assert RSNAPneumonia.Settings().image_size == 224


def test_rsna_cap_seed_and_monochrome1(tmp_path: Path) -> None:
    root = _write_release(tmp_path / "rsna")
    _write_radiograph(root / "stage_2_train_images" / "0004cfab.dcm", 51, photometric="MONOCHROME1")
    capped = (
        RSNAPneumonia()
        .configured({"image_size": 8, "max_per_class": 4, "val_fraction": 0.2, "test_fraction": 0.25})
        .load(root, 1)
    )
    items = _all_items(capped)
    assert Counter(int(label) for _, label in items) == {0: 4, 1: 4, 2: 4}
    full = RSNAPneumonia().configured({"image_size": 8, "val_fraction": 0.2, "test_fraction": 0.25})
    bundle = full.load(root, 0)
    found = [
        split[position][0]
        for split in (bundle.train, bundle.val, bundle.test)
        for position, path in enumerate(split.paths)
        if path.stem == "0004cfab"
    ]
    assert len(found) == 1
    assert torch.allclose(found[0], torch.full_like(found[0], 1 - 51 / 255), atol=1e-6), (
        "MONOCHROME1 inverted"
    )
    assert full.load(root, 0).fingerprint == full.load(root, 0).fingerprint
    assert full.load(root, 0).fingerprint != full.load(root, 1).fingerprint


def test_rsna_errors(tmp_path: Path) -> None:
    dataset = RSNAPneumonia().configured({"image_size": 8, "val_fraction": 0.2, "test_fraction": 0.25})
    with pytest.raises(UsageError, match="rsna-pneumonia needs --data-dir"):
        dataset.load(None, 0)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        UsageError, match=f"stage_2_detailed_class_info.csv or .* not found in {empty}; expected"
    ):
        dataset.load(empty, 0)
    conflicting = _write_release(tmp_path / "conflict", [("0004cfab", "Lung Opacity")])
    with pytest.raises(UsageError, match="gives patient 0004cfab two classes, 'Normal' and 'Lung Opacity'"):
        dataset.load(conflicting, 0)
    unknown = _write_release(tmp_path / "unknown", [("0ffffff", "Pneumonia")])
    with pytest.raises(UsageError, match=r"line 26: unknown class 'Pneumonia'"):
        dataset.load(unknown, 0)
    missing = _write_release(tmp_path / "missing")
    (missing / "stage_2_train_images" / "00704310.dcm").unlink()
    with pytest.raises(
        UsageError, match=r"00704310\.dcm \(listed in .*stage_2_detailed_class_info\.csv\) does not"
    ):
        dataset.load(missing, 0)
    with pytest.raises(UsageError, match="lists too few patients for a non-empty val split"):
        RSNAPneumonia().configured({"image_size": 8, "val_fraction": 0.01}).load(
            _write_release(tmp_path / "small"), 0
        )
    broken = _write_release(tmp_path / "broken")
    (broken / "stage_2_train_images" / "00aecb01.dcm").write_bytes(b"garbage")
    with pytest.raises(UsageError, match=r"cannot read DICOM file .*00aecb01\.dcm"):
        bundle = dataset.load(broken, 0)
        _all_items(bundle)
