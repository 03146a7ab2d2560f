"""``chestxray14`` on a miniature copy of the NIH ChestX-ray14 release."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medbench.errors import UsageError
from medbench.testing import check_dataset
from medbench_data.chestxray14 import ChestXray14, finding_targets
from medbench_data.chexpert import OBSERVATIONS

COLUMNS = [
    "Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender",
    "View Position", "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]", "",
]  # fmt: skip
"""The header of Data_Entry_2017.csv, including its trailing empty column."""

FINDINGS = [
    "Atelectasis|Effusion",
    "No Finding",
    "Infiltration",
    "Edema|Consolidation|Cardiomegaly",
    "Hernia|Effusion",
    "Cardiomegaly",
]
EXPECTED = [
    [1, 0, 0, 0, 1],
    [0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0],
    [0, 1, 1, 1, 0],
    [0, 0, 0, 0, 1],
    [0, 1, 0, 0, 0],
]


def _write_release(root: Path) -> Path:
    """Eight patients with two images each, spread over images_001/images and images_002/images;
    patients 1-6 are in train_val_list.txt, 7-8 in test_list.txt; patient 9 is in neither."""
    rng = np.random.default_rng(0)
    rows, train_val, test = [], [], []
    for patient in range(1, 10):
        for follow_up in range(2):
            name = f"{patient:08d}_{follow_up:03d}.png"
            folder = root / f"images_{1 + patient % 2:03d}" / "images"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (24, 24), dtype=np.uint8)
            if patient == 3 and follow_up == 1:  # a few images of the release are RGBA
                Image.fromarray(np.dstack([pixels] * 3 + [np.full_like(pixels, 255)]), "RGBA").save(
                    folder / name
                )
            else:
                Image.fromarray(pixels).save(folder / name)
            findings = FINDINGS[(patient - 1) % len(FINDINGS)]
            rows.append(
                [
                    name,
                    findings,
                    str(follow_up),
                    str(patient),
                    "58",
                    "M",
                    "PA",
                    "2682",
                    "2749",
                    "0.143",
                    "0.143",
                    "",
                ]
            )
            if patient <= 6:
                train_val.append(name)
            elif patient <= 8:
                test.append(name)
    with (root / "Data_Entry_2017.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    (root / "train_val_list.txt").write_text("\n".join(train_val) + "\n")
    (root / "test_list.txt").write_text("\n".join(test) + "\n")
    return root


def test_finding_labels_map_to_the_five_observations() -> None:
    assert [finding_targets(f).astype(int).tolist() for f in FINDINGS] == EXPECTED
    assert finding_targets("Effusion").dtype == np.float32


def test_chestxray14_official_split_multilabel(tmp_path: Path) -> None:
    root = _write_release(tmp_path / "nih")
    dataset = ChestXray14().configured({"image_size": 16, "val_fraction": 0.34})
    bundle = check_dataset(dataset, root)
    assert bundle.multilabel and bundle.class_names == OBSERVATIONS
    assert bundle.class_names[-1] == "Pleural Effusion"
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (8, 4, 4)
    test_patients = {p.name[:8] for p in bundle.test.paths}
    assert test_patients == {"00000007", "00000008"}, "test_list.txt is the test split"
    train_patients = {p.name[:8] for p in bundle.train.paths}
    val_patients = {p.name[:8] for p in bundle.val.paths}
    assert len(val_patients) == 2 and not train_patients & val_patients
    for split in (bundle.train, bundle.val, bundle.test):
        for path, label in zip(split.paths, split.labels, strict=True):
            assert label.dtype == torch.float32
            assert label.int().tolist() == EXPECTED[(int(path.name[:8]) - 1) % len(FINDINGS)]
    assert {p.parent.parent.name for p in bundle.train.paths + bundle.val.paths} == {
        "images_001",
        "images_002",
    }
    rgba = next(
        (split, i)
        for split in (bundle.train, bundle.val)
        for i, p in enumerate(split.paths)
        if p.name == "00000003_001.png"
    )
    image, _ = rgba[0][rgba[1]]
    assert image.shape == (1, 16, 16) and 0 <= float(image.min()) <= float(image.max()) <= 1
    assert ChestXray14.Settings().image_size == 320


def test_chestxray14_flat_images_folder_and_missing_images(tmp_path: Path) -> None:
    root = _write_release(tmp_path / "nih")
    flat = tmp_path / "flat"
    (flat / "images").mkdir(parents=True)
    for png in root.glob("images_*/images/*.png"):
        (flat / "images" / png.name).write_bytes(png.read_bytes())
    for name in ("Data_Entry_2017.csv", "train_val_list.txt", "test_list.txt"):
        (flat / name).write_bytes((root / name).read_bytes())
    settings = {"image_size": 8, "val_fraction": 0.34}
    nested = ChestXray14().configured(settings).load(root, 0)
    flat_bundle = ChestXray14().configured(settings).load(flat, 0)
    assert torch.equal(nested.test[0][0], flat_bundle.test[0][0])
    (root / "images_002" / "images" / "00000005_000.png").unlink()
    with pytest.raises(
        UsageError, match=r"image 00000005_000\.png listed in .*train_val_list\.txt is in none of"
    ):
        ChestXray14().configured(settings).load(root, 0)
    partial = ChestXray14().configured({**settings, "skip_missing": True}).load(root, 0)
    assert len(partial.train) + len(partial.val) == 11


def test_chestxray14_errors(tmp_path: Path) -> None:
    dataset = ChestXray14().configured({"image_size": 8, "val_fraction": 0.34})
    with pytest.raises(UsageError, match="chestxray14 needs --data-dir"):
        dataset.load(None, 0)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        UsageError, match=f"Data_Entry_2017.csv or Data_Entry_2017_v2020.csv not found in {empty}"
    ):
        dataset.load(empty, 0)
    root = _write_release(tmp_path / "nih")
    (root / "test_list.txt").write_text("99999999_000.png\n")
    with pytest.raises(
        UsageError, match=r"test_list\.txt lists 99999999_000\.png, which Data_Entry_2017\.csv does"
    ):
        dataset.load(root, 0)
    (root / "test_list.txt").unlink()
    with pytest.raises(UsageError, match=r"test_list\.txt not found in"):
        dataset.load(root, 0)
    (root / "Data_Entry_2017.csv").write_text("Image Index,Labels\n")
    with pytest.raises(UsageError, match=r"lacks the column\(s\) 'Finding Labels'; expected layout"):
        dataset.load(root, 0)
