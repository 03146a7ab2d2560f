"""Helpers of the release loaders: patient hold-outs, group splits, release paths, digests."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medbench.api import DatasetBundle
from medbench.errors import UsageError
from medbench_data._files import (
    ReleasePaths,
    files_digest,
    group_holdout,
    official_test_bundle,
    read_csv,
    resize_square,
    stratified_group_split,
    subsample,
)


def test_group_holdout_keeps_groups_whole_and_is_seeded() -> None:
    groups = [f"p{i // 3}" for i in range(30)]  # ten patients, three images each
    kept, held = group_holdout(groups, 0.2, seed=4)
    assert sorted(np.concatenate([kept, held]).tolist()) == list(range(30))
    held_patients = {groups[i] for i in held}
    assert len(held_patients) == 2 and not held_patients & {groups[i] for i in kept}
    assert np.array_equal(held, group_holdout(groups, 0.2, seed=4)[1])
    assert not np.array_equal(held, group_holdout(groups, 0.2, seed=5)[1])
    assert len(group_holdout(["only"] * 4, 0.5, 0)[1]) == 0, "a single patient cannot be split"


def test_stratified_group_split_and_subsample() -> None:
    groups = [f"s{i // 4}" for i in range(40)]  # ten series of four slices
    labels = np.array([0 if i < 20 else 1 for i in range(40)])
    train, val, test = stratified_group_split(labels, groups, 0.2, 0.2, seed=0)
    parts = [{groups[i] for i in part} for part in (train, val, test)]
    assert sum(len(part) for part in parts) == 10 and not (parts[0] & parts[1] or parts[0] & parts[2])
    assert set(labels[test].tolist()) == {0, 1}
    with pytest.raises(ValueError, match="different classes"):
        stratified_group_split(np.array([0, 1]), ["same", "same"], 0.2, 0.2, 0)
    indices = np.arange(100, 200)
    half = subsample(indices, 0.1, seed=1)
    assert len(half) == 10 and np.all(np.diff(half) > 0) and set(half) <= set(indices)
    assert np.array_equal(subsample(indices, 1.0, seed=1), indices)


def test_release_paths_bases(tmp_path: Path) -> None:
    image = tmp_path / "Release" / "train" / "a.png"
    image.parent.mkdir(parents=True)
    image.write_bytes(b"x")
    listed = tmp_path / "Release" / "train.csv"
    assert ReleasePaths(tmp_path / "Release", "x", "L").resolve("Release/train/a.png", listed) == image
    assert ReleasePaths(tmp_path, "x", "L").resolve("Release/train/a.png", listed) == image
    assert ReleasePaths(tmp_path / "Release", "x", "L").resolve("Renamed/train/a.png", listed) == image
    with pytest.raises(UsageError, match=r"lists 'Other/b\.png', found neither at .*expected layout: L"):
        ReleasePaths(tmp_path, "x", "L").resolve("Other/b.png", listed)
    with pytest.raises(UsageError, match="paths must be relative, without"):
        ReleasePaths(tmp_path, "x", "L").resolve("/etc/passwd", listed)


def test_files_digest_follows_the_files(tmp_path: Path) -> None:
    files = [tmp_path / "a.png", tmp_path / "b.png"]
    for path in files:
        path.write_bytes(b"12")
    first = files_digest(files, tmp_path, "x", "list")
    assert first == files_digest(files, tmp_path, "x", "list")
    files[1].write_bytes(b"123")
    assert files_digest(files, tmp_path, "x", "list") != first
    os.remove(files[0])
    with pytest.raises(UsageError, match=r"a\.png \(listed in list\) does not exist"):
        files_digest(files, tmp_path, "x", "list")


def test_read_csv_and_resize(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"Path,Label\n\xff\xfe\xfa,1\n")
    with pytest.raises(UsageError, match=r"x: cannot read .*bad\.csv"):
        read_csv(bad, ("Path",), "x", "L")
    good = tmp_path / "good.csv"
    good.write_text("\ufeffPath , Label\n a.png ,1\n")
    assert read_csv(good, ("Path", "Label"), "x", "L") == [{"Path": "a.png", "Label": "1"}]
    wide = np.zeros((10, 20), np.float32)
    wide[:, 5:15] = 1.0  # the central square is bright
    assert resize_square(wide, 4, "crop").min() == 1.0
    stretched = resize_square(wide, 4, "stretch")
    assert stretched.shape == (4, 4) and stretched[:, 0].max() < 0.5


@dataclass(frozen=True)
class _ReleaseSettings:
    image_size: int = 8
    fit: str = "stretch"
    val_fraction: float = 0.25


def test_official_test_bundle_holds_out_patients_and_keeps_the_test_list(tmp_path: Path) -> None:
    files = []
    for index in range(26):  # 20 training images of 8 patients, then 6 listed test images
        path = tmp_path / f"image{index}.png"
        Image.fromarray(np.full((10, 12), index * 9, np.uint8)).save(path)
        files.append(path)
    train_files, test_files = files[:20], files[20:]
    labels = np.arange(26, dtype=np.int64) % 2
    patients = [f"p{i % 8}" for i in range(20)]
    digest = files_digest(files, tmp_path, "release", tmp_path)

    def bundle(seed: int, train_fraction: float = 1.0) -> DatasetBundle:
        return official_test_bundle(
            "release",
            _ReleaseSettings(),
            seed,
            (train_files, labels[:20], patients),
            (test_files, labels[20:]),
            class_names=["a", "b"],
            files=digest,
            hint="",
            train_fraction=train_fraction,
        )

    first = bundle(0)
    train_patients = {patients[train_files.index(path)] for path in first.train.paths}
    val_patients = {patients[train_files.index(path)] for path in first.val.paths}
    assert len(val_patients) == 2 and not train_patients & val_patients
    assert len(first.train) + len(first.val) == 20
    assert sorted(map(str, first.test.paths)) == sorted(map(str, test_files)), "the test list is kept whole"
    assert [labels[files.index(path)] for path in first.test.paths] == first.test.labels.tolist()
    assert first.input_shape == (1, 8, 8) and first.modality == "xray" and not first.multilabel
    assert bundle(0).fingerprint == first.fingerprint and bundle(1).fingerprint != first.fingerprint
    assert len(bundle(0, train_fraction=0.5).train) == round(len(first.train) / 2)
