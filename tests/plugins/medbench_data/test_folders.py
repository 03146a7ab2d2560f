"""The shared helpers of the release-folder datasets (``medbench_data._folders`` and ``_folder_images``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from medbench.errors import UsageError
from medbench_data._folder_images import preprocess, resize_center_crop
from medbench_data._folders import (
    balance_by_downsampling,
    downsample_classes,
    find_root,
    list_images,
    resolve,
)


def _gradient(width: int, height: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(width * 1000 + height)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB").convert(mode)


@pytest.mark.parametrize(("width", "height"), [(40, 32), (32, 40), (33, 50), (16, 16), (12, 9)])
def test_resize_center_crop_matches_torchvision(width: int, height: int) -> None:
    image = _gradient(width, height)
    reference = transforms.Compose([transforms.Resize(16), transforms.CenterCrop(16)])(image)
    ours = resize_center_crop(image, 16)
    assert ours.size == (16, 16)
    assert np.array_equal(np.asarray(ours), np.asarray(reference))


def test_preprocess_grey_and_rgb_match_totensor() -> None:
    image = _gradient(40, 32)
    pipeline = transforms.Compose([transforms.Resize(16), transforms.CenterCrop(16), transforms.ToTensor()])
    rgb = torch.from_numpy(preprocess(image, 16, 3)).float() / 255
    assert rgb.shape == (3, 16, 16)
    assert torch.equal(rgb, pipeline(image))
    grey = torch.from_numpy(preprocess(image, 16, 1)).float() / 255
    assert grey.shape == (1, 16, 16)
    assert torch.equal(grey, pipeline(image.convert("L"))), "grayscale is ITU-R 601 luma, as PIL's L"


def test_preprocess_16_bit_keeps_range_and_repeats_for_rgb() -> None:
    sixteen = Image.fromarray(np.full((32, 40), 40000, dtype=np.uint16))
    grey = preprocess(sixteen, 8, 1)
    assert grey.dtype == np.uint8 and grey.shape == (1, 8, 8)
    assert np.all(grey == 156), "40000 / 65535 of the range, not clipped to 255"
    rgb = preprocess(sixteen, 8, 3)
    assert rgb.shape == (3, 8, 8) and np.array_equal(rgb[0], rgb[2])


def test_downsample_classes_caps_one_class_deterministically() -> None:
    labels = np.array([0] * 5 + [1] * 20 + [2] * 3)
    kept = downsample_classes(labels, {1: 6}, seed=3)
    assert np.bincount(labels[kept]).tolist() == [5, 6, 3]
    assert np.array_equal(kept, downsample_classes(labels, {1: 6}, seed=3))
    assert not np.array_equal(kept, downsample_classes(labels, {1: 6}, seed=4))
    assert np.all(np.diff(kept) > 0), "indices come back sorted"


def test_balance_by_downsampling_equalises_to_the_smallest_class() -> None:
    labels = np.array([1] * 11 + [0] * 4)
    kept = balance_by_downsampling(labels, seed=0)
    assert np.bincount(labels[kept]).tolist() == [4, 4]
    assert set(np.flatnonzero(labels == 0)) <= set(kept.tolist()), "the smaller class is kept whole"


def test_find_root_searches_two_levels_and_ignores_case(tmp_path: Path) -> None:
    release = tmp_path / "download" / "Release"
    (release / "Normal Cases").mkdir(parents=True)
    (tmp_path / "__MACOSX" / "x" / "Normal cases").mkdir(parents=True)
    markers = [("Normal cases",)]
    assert find_root(tmp_path, markers, owner="demo", layout="L") == release
    assert find_root(release, markers, owner="demo", layout="L") == release
    assert resolve(release, ("Benign", "normal CASES")) == release / "Normal Cases"
    with pytest.raises(UsageError, match=r"demo: .*empty lacks Bengin cases; expected layout: L"):
        (tmp_path / "empty").mkdir()
        find_root(tmp_path / "empty", [("Bengin cases",)], owner="demo", layout="L")
    with pytest.raises(UsageError, match=r"demo: .*nowhere is not a directory; expected layout: L"):
        find_root(tmp_path / "nowhere", markers, owner="demo", layout="L")


def test_list_images_skips_hidden_other_and_excluded_files(tmp_path: Path) -> None:
    for name in ("b.png", "a.JPG", "c.jpeg", ".hidden.png", "notes.txt", "a_mask.png"):
        (tmp_path / name).write_bytes(b"x")
    names = [p.name for p in list_images(tmp_path, lambda p: "_mask" in p.stem)]
    assert names == ["a.JPG", "b.png", "c.jpeg"]
