"""``chexpert`` on a miniature copy of the CheXpert-v1.0-small release."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medbench.errors import UsageError
from medbench.testing import check_dataset
from medbench_data.chexpert import OBSERVATIONS, CheXpert, apply_policies, parse_observations, policies_for

COLUMNS = [
    "Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding", "Enlarged Cardiomediastinum",
    "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Atelectasis",
    "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices",
]  # fmt: skip
"""The header of the release's train.csv and valid.csv."""

# raw labels per patient, in OBSERVATIONS order:
# Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural Effusion
TRAIN_LABELS = [
    ("-1.0", "-1.0", "-1.0", "-1.0", "-1.0"),
    ("1.0", "0.0", "", "-1.0", "1.0"),
    ("", "", "", "", ""),
    ("0.0", "1.0", "-1.0", "0.0", "-1.0"),
    ("-1.0", "1.0", "1.0", "", "0.0"),
    ("1.0", "-1.0", "0.0", "1.0", ""),
]
# paper 002: Atelectasis U-Ones, Cardiomegaly U-Zeros, Consolidation U-Zeros, Edema U-Ones,
# Pleural Effusion U-Ones; blank → 0
PAPER = {
    0: [1, 0, 0, 1, 1],
    1: [1, 0, 0, 1, 1],
    2: [0, 0, 0, 0, 0],
    3: [0, 1, 0, 0, 1],
    4: [1, 1, 1, 0, 0],
    5: [1, 0, 0, 1, 0],
}


def _row(path: str, view: str, labels: tuple[str, ...]) -> dict[str, str]:
    row = dict.fromkeys(COLUMNS, "")
    row.update({"Path": path, "Sex": "Female", "Age": "68", "Frontal/Lateral": view, "AP/PA": "AP"})
    row.update(zip(OBSERVATIONS, labels, strict=True))
    row["Pneumonia"] = "-1.0"  # not one of the five: ignored
    return row


def _write_release(parent: Path, folder: str = "CheXpert-v1.0-small") -> Path:
    """Six patients with one frontal and one lateral view each in train, two in valid."""
    rng = np.random.default_rng(0)
    tables: dict[str, list[dict[str, str]]] = {"train": [], "valid": []}
    for split, count in (("train", len(TRAIN_LABELS)), ("valid", 2)):
        for patient in range(count):
            labels = TRAIN_LABELS[patient] if split == "train" else ("1.0", "0.0", "0.0", "1.0", "0.0")
            for view, name in (("Frontal", "view1_frontal.jpg"), ("Lateral", "view2_lateral.jpg")):
                relative = (
                    f"{folder}/{split}/patient{patient + 1 + 100 * (split == 'valid'):05d}/study1/{name}"
                )
                image = parent / relative
                image.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (20, 16), dtype=np.uint8)).save(image)
                tables[split].append(_row(relative, view, labels))
    for split, rows in tables.items():
        with (parent / folder / f"{split}.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    return parent / folder


def _targets_by_file(bundle: object) -> dict[str, list[int]]:
    result = {}
    for split in (bundle.train, bundle.val, bundle.test):  # type: ignore[attr-defined]
        for path, label in zip(split.paths, split.labels, strict=True):
            result[path.relative_to(path.parents[3]).as_posix()] = label.int().tolist()
    return result


def test_uncertainty_policies_per_observation(tmp_path: Path) -> None:
    raw = parse_observations(
        [dict(zip(OBSERVATIONS, labels, strict=True)) for labels in TRAIN_LABELS], tmp_path
    )
    assert np.isnan(raw[2]).all() and raw[0].tolist() == [-1.0] * 5
    paper = apply_policies(raw, policies_for("paper"))
    assert paper.dtype == np.float32
    assert paper.astype(int).tolist() == [PAPER[i] for i in range(6)]
    ones = apply_policies(raw, policies_for("ones")).astype(int).tolist()
    zeros = apply_policies(raw, policies_for("zeros")).astype(int).tolist()
    assert ones[0] == [1, 1, 1, 1, 1] and zeros[0] == [0, 0, 0, 0, 0]
    assert ones[3] == [0, 1, 1, 0, 1] and zeros[3] == [0, 1, 0, 0, 0]
    assert ones[2] == zeros[2] == [0, 0, 0, 0, 0], "blank is negative under every policy"
    assert policies_for("paper") == ("ones", "zeros", "zeros", "ones", "ones")


def test_chexpert_release_multilabel(tmp_path: Path) -> None:
    root = _write_release(tmp_path)
    dataset = CheXpert().configured({"image_size": 12, "val_fraction": 0.34})
    bundle = check_dataset(dataset, root)
    assert bundle.multilabel and bundle.class_names == OBSERVATIONS
    assert bundle.input_shape == (1, 12, 12) and bundle.modality == "xray"
    assert (len(bundle.train) + len(bundle.val), len(bundle.test)) == (12, 4)
    _, label = bundle.train[0]
    assert label.dtype == torch.float32 and label.shape == (5,)
    targets = _targets_by_file(bundle)
    for patient, expected in PAPER.items():
        for view in ("view1_frontal.jpg", "view2_lateral.jpg"):
            assert targets[f"train/patient{patient + 1:05d}/study1/{view}"] == expected
    assert targets["valid/patient00101/study1/view1_frontal.jpg"] == [1, 0, 0, 1, 0]
    train_patients = {p.parents[1].name for p in bundle.train.paths}
    val_patients = {p.parents[1].name for p in bundle.val.paths}
    assert val_patients and not train_patients & val_patients, "the validation split holds out whole patients"
    with Image.open(bundle.test.paths[0]) as raw:
        expected_image = np.asarray(raw.convert("L").resize((12, 12), Image.Resampling.BILINEAR), np.float32)
    assert torch.allclose(bundle.test[0][0][0], torch.from_numpy(expected_image / 255), atol=0.02)
    ones = (
        CheXpert().configured({"image_size": 12, "val_fraction": 0.34, "uncertainty": "ones"}).load(root, 0)
    )
    assert _targets_by_file(ones)["train/patient00001/study1/view1_frontal.jpg"] == [1, 1, 1, 1, 1]
    assert ones.fingerprint != bundle.fingerprint
    assert CheXpert.Settings().image_size == 320 and CheXpert.Settings().uncertainty == "paper"


def test_chexpert_frontal_only_fraction_and_paths(tmp_path: Path) -> None:
    root = _write_release(tmp_path / "release")
    frontal = (
        CheXpert().configured({"image_size": 8, "frontal_only": True, "val_fraction": 0.34}).load(root, 0)
    )
    paths = [p for split in (frontal.train, frontal.val, frontal.test) for p in split.paths]
    assert len(paths) == 8 and all(p.name == "view1_frontal.jpg" for p in paths)
    small = (
        CheXpert().configured({"image_size": 8, "train_fraction": 0.25, "val_fraction": 0.34}).load(root, 0)
    )
    assert len(small.train) == 2, "a quarter of the 8 training images left after the validation patients"
    # --data-dir may be the folder holding the release folder, or a renamed release folder
    from_parent = CheXpert().configured({"image_size": 8, "val_fraction": 0.34}).load(root.parent, 0)
    renamed = tmp_path / "renamed"
    shutil.copytree(root, renamed / "chexpert")
    from_renamed = (
        CheXpert().configured({"image_size": 8, "val_fraction": 0.34}).load(renamed / "chexpert", 0)
    )
    reference = CheXpert().configured({"image_size": 8, "val_fraction": 0.34}).load(root, 0)
    assert torch.equal(from_parent.test[0][0], reference.test[0][0])
    assert torch.equal(from_renamed.test[0][0], reference.test[0][0])
    assert from_parent.fingerprint == reference.fingerprint


def _rewrite(path: Path, change: dict[str, str], line: int = 0) -> None:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    rows[line].update(change)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_chexpert_errors(tmp_path: Path) -> None:
    dataset = CheXpert().configured({"image_size": 8, "val_fraction": 0.34})
    with pytest.raises(UsageError, match="chexpert needs --data-dir"):
        dataset.load(None, 0)
    with pytest.raises(UsageError, match=r"is not a directory; expected layout: DATA_DIR/train\.csv"):
        dataset.load(tmp_path / "missing", 0)
    root = _write_release(tmp_path)
    _rewrite(root / "train.csv", {"Edema": "2.0"}, line=3)
    with pytest.raises(
        UsageError, match=r"train\.csv line 5, column 'Edema': '2\.0' is not 1\.0, 0\.0, -1\.0"
    ):
        dataset.load(root, 0)
    _rewrite(root / "train.csv", {"Edema": "1.0"}, line=3)
    _rewrite(root / "train.csv", {"Path": "CheXpert-v1.0-small/train/nobody/study1/x.jpg"})
    with pytest.raises(
        UsageError, match=r"lists 'CheXpert-v1.0-small/train/nobody/study1/x\.jpg', found neither"
    ):
        dataset.load(root, 0)
    _rewrite(root / "train.csv", {"Path": "../outside.jpg"})
    with pytest.raises(UsageError, match="paths must be relative, without"):
        dataset.load(root, 0)
    _rewrite(root / "train.csv", {"Path": "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"})
    (root / "train" / "patient00002" / "study1" / "view2_lateral.jpg").unlink()
    with pytest.raises(
        UsageError, match=r"patient00002/study1/view2_lateral\.jpg \(listed in .*\) does not exist"
    ):
        dataset.load(root, 0)
    (root / "train" / "patient00002" / "study1" / "view2_lateral.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(UsageError, match=r"cannot decode image .*patient00002/study1/view2_lateral\.jpg"):
        bundle = dataset.load(root, 0)
        [split[i] for split in (bundle.train, bundle.val, bundle.test) for i in range(len(split))]
    with (root / "valid.csv").open("w") as handle:
        handle.write("Path,Atelectasis\n")
    with pytest.raises(UsageError, match=r"valid\.csv lacks the column\(s\) 'Cardiomegaly', 'Consolidation'"):
        dataset.load(root, 0)
    (root / "valid.csv").unlink()
    with pytest.raises(UsageError, match=f"valid.csv not found in {root}; expected layout"):
        dataset.load(root, 0)
    with pytest.raises(UsageError, match="uncertainty must be one of"):
        CheXpert().configured({"uncertainty": "ignore"})
