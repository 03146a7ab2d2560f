"""``mura-shoulder`` on a miniature copy of the MURA-v1.1 release."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medbench.errors import UsageError
from medbench.testing import check_dataset
from medbench_data.mura import MURAShoulder, read_image_paths, study_label

# (split, body part, patient, study folder, images)
STUDIES = [
    ("train", "XR_SHOULDER", 1, "study1_positive", 3),
    ("train", "XR_SHOULDER", 2, "study1_negative", 2),
    ("train", "XR_SHOULDER", 2, "study2_positive", 1),
    ("train", "XR_SHOULDER", 3, "study1_negative", 3),
    ("train", "XR_SHOULDER", 4, "study1_positive", 2),
    ("train", "XR_SHOULDER", 5, "study1_negative", 2),
    ("train", "XR_WRIST", 6, "study1_positive", 4),
    ("train", "XR_ELBOW", 7, "study1_negative", 2),
    ("valid", "XR_SHOULDER", 11, "study1_positive", 2),
    ("valid", "XR_SHOULDER", 12, "study1_negative", 2),
    ("valid", "XR_HAND", 13, "study1_negative", 3),
]


def _write_release(parent: Path, write_other_parts: bool = True) -> Path:
    """The release folder MURA-v1.1 under ``parent``; non-shoulder images optionally absent."""
    rng = np.random.default_rng(0)
    listed: dict[str, list[str]] = {"train": [], "valid": []}
    for split, part, patient, study, count in STUDIES:
        for index in range(count):
            relative = f"MURA-v1.1/{split}/{part}/patient{patient:05d}/{study}/image{index + 1}.png"
            listed[split].append(relative)
            if part == "XR_SHOULDER" or write_other_parts:
                path = parent / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                mode = "RGB" if index == 0 else "L"
                shape = (30, 22, 3) if mode == "RGB" else (30, 22)
                Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
    for split, paths in listed.items():
        (parent / "MURA-v1.1" / f"{split}_image_paths.csv").write_text("\n".join(paths) + "\n")
    return parent / "MURA-v1.1"


def test_mura_shoulder_subset_and_labels(tmp_path: Path) -> None:
    root = _write_release(tmp_path, write_other_parts=False)
    dataset = MURAShoulder().configured({"image_size": 16, "val_fraction": 0.4})
    bundle = check_dataset(dataset, root)
    assert bundle.class_names == ("normal", "abnormal") and not bundle.multilabel
    assert bundle.input_shape == (1, 16, 16) and bundle.modality == "xray"
    assert len(bundle.train) + len(bundle.val) == 13, "only the 13 shoulder images of train"
    assert len(bundle.test) == 4, "only the 4 shoulder images of valid"
    every = [
        (path, int(label))
        for split in (bundle.train, bundle.val, bundle.test)
        for path, label in zip(split.paths, split.labels, strict=True)
    ]
    assert all("XR_SHOULDER" in path.parts for path, _ in every)
    assert all(label == (path.parent.name.endswith("_positive")) for path, label in every)
    assert Counter(label for _, label in every) == {0: 9, 1: 8}
    assert bundle.train.labels.dtype == torch.int64
    train_patients = {p.parents[1].name for p in bundle.train.paths}
    val_patients = {p.parents[1].name for p in bundle.val.paths}
    assert len(val_patients) == 2 and not train_patients & val_patients, "patients are held out whole"
    assert MURAShoulder.Settings().image_size == 320


def test_mura_from_parent_folder_and_helpers(tmp_path: Path) -> None:
    root = _write_release(tmp_path)
    settings = {"image_size": 8, "val_fraction": 0.4}
    from_root = MURAShoulder().configured(settings).load(root, 0)
    from_parent = MURAShoulder().configured(settings).load(tmp_path, 0)
    assert from_parent.fingerprint == from_root.fingerprint
    assert torch.equal(from_parent.test[0][0], from_root.test[0][0])
    assert from_root.fingerprint != MURAShoulder().configured(settings).load(root, 1).fingerprint
    headed = tmp_path / "headed.csv"
    headed.write_text("path\nMURA-v1.1/train/XR_SHOULDER/patient00001/study1_positive/image1.png\n")
    assert read_image_paths(headed) == ["MURA-v1.1/train/XR_SHOULDER/patient00001/study1_positive/image1.png"]
    assert study_label("a/XR_SHOULDER/patient1/study3_negative/image1.png", headed) == 0


def test_mura_errors(tmp_path: Path) -> None:
    dataset = MURAShoulder().configured({"image_size": 8, "val_fraction": 0.4})
    with pytest.raises(UsageError, match="mura-shoulder needs --data-dir"):
        dataset.load(None, 0)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match=f"train_image_paths.csv not found in {empty}; expected layout"):
        dataset.load(empty, 0)
    root = _write_release(tmp_path / "release")
    paths = root / "valid_image_paths.csv"
    paths.write_text("MURA-v1.1/valid/XR_SHOULDER/patient00011/study1/image1.png\n")
    with pytest.raises(UsageError, match="study folder 'study1' ends in neither _positive nor _negative"):
        dataset.load(root, 0)
    paths.write_text("MURA-v1.1/valid/XR_HAND/patient00013/study1_negative/image1.png\n")
    with pytest.raises(UsageError, match=r"valid_image_paths\.csv lists no XR_SHOULDER image"):
        dataset.load(root, 0)
    paths.write_text("MURA-v1.1/valid/XR_SHOULDER/patient00011/study1_positive/image1.png\n")
    (root / "valid" / "XR_SHOULDER" / "patient00011" / "study1_positive" / "image1.png").write_bytes(
        b"\x89PNG bad"
    )
    with pytest.raises(UsageError, match=r"cannot decode image .*patient00011/study1_positive/image1\.png"):
        dataset.load(root, 0)
