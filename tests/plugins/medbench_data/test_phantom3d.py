"""``phantom3d``: the synthetic 3D segmentation dataset."""

from __future__ import annotations

import time
from typing import Any

import pytest
import torch

from medbench.api import DatasetBundle
from medbench.errors import UsageError
from medbench.testing import check_dataset
from medbench_data import register_datasets
from medbench_data.phantom3d import CLASS_NAMES, Phantom3D, PhantomSplit, generate_volume

SMALL = {"image_size": 32, "n_train": 3, "n_val": 2, "n_test": 2}


def _load(seed: int = 0, **overrides: Any) -> DatasetBundle:
    return Phantom3D().configured({**SMALL, **overrides}).load(None, seed)


def test_keeps_the_segmentation_dataset_contract() -> None:
    bundle = check_dataset(Phantom3D().configured(SMALL))
    assert bundle.task == "segmentation" and not bundle.multilabel
    assert bundle.class_names == CLASS_NAMES == ("background", "liver", "kidney", "spleen", "aorta")
    assert bundle.input_shape == (1, 32, 32, 32)
    assert bundle.modality == "synthetic-ct"
    assert bundle.intensity_window == (-175.0, 250.0) and bundle.intensity_unit == "HU"
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (3, 2, 2)
    assert Phantom3D.task == "segmentation" and Phantom3D.dims == 3 and not Phantom3D.needs_data_dir
    assert Phantom3D.description and "\n" not in Phantom3D.description


def test_items_are_unit_range_volumes_with_int64_label_maps() -> None:
    bundle = _load()
    for split in (bundle.train, bundle.val, bundle.test):
        for index in range(len(split)):
            image, label = split[index]
            assert image.dtype == torch.float32 and image.shape == (1, 32, 32, 32)
            assert label.dtype == torch.int64 and label.shape == (32, 32, 32)
            assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
            assert set(label.unique().tolist()) <= set(range(len(CLASS_NAMES)))
    with pytest.raises(IndexError):
        bundle.val[2]


def test_a_typical_volume_has_every_organ_and_distinct_intensities() -> None:
    settings = Phantom3D.Settings(noise=0.0)
    for seed in range(3):
        image, label = generate_volume(settings, seed, "train", 0)
        counts = torch.bincount(label.flatten(), minlength=len(CLASS_NAMES))
        assert bool((counts > 0).all()), f"seed {seed}: a class is missing ({counts.tolist()})"
        assert counts[1] > counts[3] > 0 and counts[1] > counts[2], "the liver is the largest organ"
        means = [float(image[0][label == cls].mean()) for cls in range(1, len(CLASS_NAMES))]
        liver, kidney, spleen, aorta = means
        assert aorta > kidney > liver > spleen, means
        # air is dark; the spine is bright but labelled background
        assert float(image[0, :, 0, 0].max()) == 0.0
        assert float(image[0][label == 0].max()) > 0.85


def test_same_seed_gives_the_same_volumes_whatever_the_order() -> None:
    first, second = _load(seed=3), _load(seed=3)
    assert first.fingerprint == second.fingerprint and len(first.fingerprint) == 32
    forward = [first.train[i] for i in range(3)]
    backward = [second.train[i] for i in reversed(range(3))][::-1]
    for (image_a, label_a), (image_b, label_b) in zip(forward, backward, strict=True):
        assert torch.equal(image_a, image_b) and torch.equal(label_a, label_b)
    assert torch.equal(first.test[1][0], second.test[-1][0])


def test_seeds_splits_and_indices_give_different_volumes() -> None:
    base, other = _load(seed=0), _load(seed=1)
    assert base.fingerprint != other.fingerprint
    assert not torch.equal(base.train[0][0], other.train[0][0])
    assert not torch.equal(base.train[0][1], other.train[0][1])
    assert not torch.equal(base.train[0][0], base.train[1][0])
    assert not torch.equal(base.val[0][0], base.test[0][0])
    assert _load(seed=0, noise=0.05).fingerprint != base.fingerprint


def test_noise_setting_controls_the_noise() -> None:
    clean = generate_volume(Phantom3D.Settings(image_size=32, noise=0.0), 0, "val", 0)
    noisy = generate_volume(Phantom3D.Settings(image_size=32, noise=0.05), 0, "val", 0)
    assert torch.equal(clean[1], noisy[1])
    body = (clean[0] > 0.3) & (clean[0] < 0.7)
    residual = (noisy[0] - clean[0])[body]
    assert 0.04 < float(residual.std()) < 0.06


@pytest.mark.parametrize("size", [16, 96])
def test_other_sizes_work(size: int) -> None:
    image, label = PhantomSplit(Phantom3D.Settings(image_size=size), 0, "test", 1)[0]
    assert image.shape == (1, size, size, size) and label.shape == (size, size, size)
    assert len(label.unique()) >= 4


def test_generation_is_fast() -> None:
    settings = Phantom3D.Settings()
    generate_volume(settings, 0, "train", 0)  # warm the cached grids and filters
    timings = []
    for index in range(3):
        start = time.perf_counter()
        generate_volume(settings, 0, "train", index)
        timings.append(time.perf_counter() - start)
    # about 20 ms on an idle 2-core machine; the bound only catches a pathological slowdown
    assert min(timings) < 5.0, timings


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"image_size": 8}, "image_size must be a multiple of 8 between 16 and 256, got 8"),
        ({"image_size": 36}, "image_size must be a multiple of 8"),
        ({"image_size": 512}, "image_size must be a multiple of 8"),
        ({"n_train": 0}, "n_train must be at least 1"),
        ({"n_test": 0}, "n_test must be at least 1"),
        ({"noise": -0.1}, "noise must be in"),
    ],
)
def test_bad_settings_are_usage_errors(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=f"dataset 'phantom3d': .*{message}"):
        Phantom3D().configured(overrides)


def test_load_validates_settings_too() -> None:
    with pytest.raises(UsageError, match="image_size must be a multiple of 8"):
        Phantom3D(Phantom3D.Settings(image_size=20)).load(None, 0)


def test_both_3d_datasets_are_registered() -> None:
    registered: list[Any] = []
    register_datasets(registered.append)
    by_name = {dataset.name: dataset for dataset in registered}
    assert isinstance(by_name["phantom3d"], Phantom3D) and not by_name["phantom3d"].needs_data_dir
    assert by_name["nifti"].needs_data_dir and by_name["nifti"].layout
    assert by_name["phantom3d"].task == by_name["nifti"].task == "segmentation"
