"""``imagefolder`` and ``medmnist`` on real files written by the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medbench.errors import UsageError
from medbench.testing import check_dataset
from medbench_data.imagefolder import ImageFolder
from medbench_data.medmnist import MedMNIST


def _write_folder(root: Path, per_class: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for label, suffix in (("benign", ".png"), ("malignant", ".jpg")):
        folder = root / label
        folder.mkdir(parents=True)
        for index in range(per_class):
            pixels = rng.integers(0, 256, (20, 24), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"img{index}{suffix}")
    return root


def test_imagefolder_reads_png_and_jpeg(tmp_path: Path) -> None:
    root = _write_folder(tmp_path / "data")
    dataset = ImageFolder().configured({"image_size": 16})
    bundle = check_dataset(dataset, root)
    assert bundle.class_names == ("benign", "malignant")
    assert bundle.input_shape == (1, 16, 16)
    sizes = [len(bundle.train), len(bundle.val), len(bundle.test)]
    assert sum(sizes) == 12 and all(sizes)
    labels = torch.stack([bundle.test[i][1] for i in range(len(bundle.test))])
    assert set(labels.tolist()) == {0, 1}, "the split is stratified"


def test_imagefolder_converts_16_bit_rgba_and_resizes(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir(parents=True)
    sixteen = np.full((10, 10), 32768, dtype=np.uint16)
    for index in range(4):
        Image.fromarray(sixteen).save(root / "a" / f"{index}.png")
        rgba = np.zeros((12, 12, 4), dtype=np.uint8)
        rgba[..., 0] = 255
        rgba[..., 3] = 10
        Image.fromarray(rgba, "RGBA").save(root / "b" / f"{index}.PNG")
    bundle = (
        ImageFolder().configured({"image_size": 8, "val_fraction": 0.25, "test_fraction": 0.25}).load(root, 0)
    )
    images = {int(label): image for image, label in (bundle.train[i] for i in range(len(bundle.train)))}
    assert images[0].shape == (1, 8, 8)
    assert torch.allclose(images[0], torch.full((1, 8, 8), 32768 / 65535), atol=1e-4), (
        "16-bit kept its precision"
    )
    assert torch.allclose(images[1], torch.full((1, 8, 8), 0.299), atol=2e-3), "red → luma, alpha ignored"


def test_imagefolder_determinism_and_cap(tmp_path: Path) -> None:
    root = _write_folder(tmp_path / "data", per_class=10)
    capped = ImageFolder().configured({"max_per_class": 4, "image_size": 8}).load(root, 1)
    assert len(capped.train) + len(capped.val) + len(capped.test) == 8
    other = ImageFolder().configured({"image_size": 8}).load(root, 2)
    same = ImageFolder().configured({"image_size": 8}).load(root, 2)
    assert other.fingerprint == same.fingerprint
    assert other.fingerprint != ImageFolder().configured({"image_size": 8}).load(root, 3).fingerprint


def test_imagefolder_errors_name_the_path_and_layout(tmp_path: Path) -> None:
    dataset = ImageFolder()
    with pytest.raises(UsageError, match="needs --data-dir"):
        dataset.load(None, 0)
    with pytest.raises(UsageError, match="is not a directory"):
        dataset.load(tmp_path / "missing", 0)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match=f"no class sub-folders in {empty}.*one sub-folder per class"):
        dataset.load(empty, 0)
    (empty / "only").mkdir()
    (empty / "only" / "x.png").write_bytes(b"")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(empty / "only" / "x.png")
    with pytest.raises(UsageError, match="only one class folder"):
        dataset.load(empty, 0)
    (empty / "other").mkdir()
    with pytest.raises(UsageError, match="has no PNG/JPEG images"):
        dataset.load(empty, 0)
    (empty / "other" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(UsageError, match=r"cannot decode image .*broken\.jpg"):
        dataset.load(empty, 0)
    with pytest.raises(UsageError, match="image_size"):
        ImageFolder().configured({"image_size": 4})


def _write_npz(
    path: Path, *, rgb: bool = False, multilabel: bool = False, n: int = 10, side: int = 28
) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in (("train", n), ("val", n // 2), ("test", n // 2)):
        shape = (count, side, side, 3) if rgb else (count, side, side)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        if multilabel:
            arrays[f"{split}_labels"] = rng.integers(0, 2, (count, 14), dtype=np.uint8)
        else:
            arrays[f"{split}_labels"] = (np.arange(count) % (8 if rgb else 2)).reshape(-1, 1).astype(np.uint8)
    np.savez_compressed(path, **arrays)
    return path


def test_medmnist_grayscale_subset_from_file_or_folder(tmp_path: Path) -> None:
    path = _write_npz(tmp_path / "pneumoniamnist.npz")
    bundle = check_dataset(MedMNIST(), path)
    assert bundle.class_names == ("normal", "pneumonia")
    assert bundle.input_shape == (1, 28, 28)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (10, 5, 5)
    with np.load(path) as raw:
        first = torch.from_numpy(raw["test_images"][0].astype(np.float32) / 255)
    assert torch.allclose(bundle.test[0][0][0], first)
    from_folder = MedMNIST().load(tmp_path, 0)
    assert from_folder.fingerprint == bundle.fingerprint


def test_medmnist_rgb_subset_becomes_luma_or_stays_rgb(tmp_path: Path) -> None:
    path = _write_npz(tmp_path / "bloodmnist_64.npz", rgb=True, side=64)
    gray = MedMNIST().configured({"subset": "bloodmnist", "size": 64}).load(tmp_path, 0)
    assert gray.input_shape == (1, 64, 64) and gray.num_classes == 8 and gray.class_names[0] == "basophil"
    with np.load(path) as raw:
        expected = (
            raw["train_images"][0].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) / 255
        )
    assert torch.allclose(gray.train[0][0][0], torch.from_numpy(expected), atol=1e-5)
    rgb = MedMNIST().configured({"grayscale": False, "image_size": 32}).load(path, 0)
    assert rgb.input_shape == (3, 32, 32)


def test_medmnist_chestmnist_is_multilabel(tmp_path: Path) -> None:
    path = _write_npz(tmp_path / "chestmnist.npz", multilabel=True)
    bundle = MedMNIST().load(path, 0)
    assert bundle.multilabel and bundle.num_classes == 14 and bundle.class_names[1] == "cardiomegaly"
    _, label = bundle.train[0]
    assert label.dtype == torch.float32 and label.shape == (14,)


def test_medmnist_errors(tmp_path: Path) -> None:
    expected = r"pneumoniamnist\.npz or pneumoniamnist_28\.npz not found in .*train_images"
    with pytest.raises(UsageError, match=expected):
        MedMNIST().load(tmp_path, 0)
    broken = tmp_path / "pneumoniamnist.npz"
    np.savez(broken, train_images=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(UsageError, match="lacks train_labels"):
        MedMNIST().load(broken, 0)
    broken.write_bytes(b"not a zip file")
    with pytest.raises(UsageError, match="cannot read"):
        MedMNIST().load(broken, 0)
    arrays = {
        f"{s}_{k}": np.zeros((3, 28, 28), np.uint8) for s in ("train", "val", "test") for k in ("images",)
    }
    arrays.update({f"{s}_labels": np.zeros((2, 1), np.uint8) for s in ("train", "val", "test")})
    np.savez(broken, **arrays)
    with pytest.raises(UsageError, match="3 images but 2 labels"):
        MedMNIST().load(broken, 0)
