"""``phantom2d``: the synthetic dataset of the smoke suite."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from medbench.api import DatasetBundle
from medbench.errors import UsageError
from medbench.testing import check_dataset
from medbench_data import register_datasets
from medbench_data._common import TensorSplit
from medbench_data.phantom2d import CLASS_NAMES, Phantom2D, generate_phantoms

SMALL = {"n_samples": 120, "image_size": 32}


def _load(seed: int = 0, **overrides: Any) -> DatasetBundle:
    return Phantom2D().configured({**SMALL, **overrides}).load(None, seed)


def _tensors(split: Any) -> tuple[torch.Tensor, torch.Tensor]:
    assert isinstance(split, TensorSplit)
    return split.images, split.labels


def test_keeps_the_dataset_contract() -> None:
    bundle = check_dataset(Phantom2D().configured(SMALL))
    assert bundle.class_names == CLASS_NAMES == ("no_lesion", "lesion")
    assert bundle.input_shape == (1, 32, 32)
    assert bundle.task == "classification" and not bundle.multilabel
    assert bundle.modality == "synthetic-ct"
    assert Phantom2D.needs_data_dir is False and Phantom2D.task == "classification"
    assert Phantom2D.description and "\n" not in Phantom2D.description


def test_items_are_float_images_in_unit_range_and_int64_labels() -> None:
    bundle = _load()
    image, label = bundle.train[0]
    assert image.dtype == torch.float32 and image.shape == (1, 32, 32)
    assert label.dtype == torch.int64 and label.shape == ()
    for split in (bundle.train, bundle.val, bundle.test):
        images, labels = _tensors(split)
        assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
        assert set(labels.tolist()) <= {0, 1}


def test_same_seed_same_data_and_fingerprint() -> None:
    first, second = _load(seed=3), _load(seed=3)
    assert first.fingerprint == second.fingerprint
    assert len(first.fingerprint) == 32 and int(first.fingerprint, 16) >= 0
    for name in ("train", "val", "test"):
        a, b = _tensors(getattr(first, name)), _tensors(getattr(second, name))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_another_seed_or_setting_changes_data_and_fingerprint() -> None:
    base = _load(seed=0)
    other_seed = _load(seed=1)
    assert other_seed.fingerprint != base.fingerprint
    assert not torch.equal(_tensors(other_seed.test)[0], _tensors(base.test)[0])
    noisier = _load(seed=0, noise_std=0.05)
    assert noisier.fingerprint != base.fingerprint
    assert _load(seed=0, val_fraction=0.2).fingerprint != base.fingerprint


def test_default_set_is_balanced_and_split_70_15_15() -> None:
    bundle = Phantom2D().load(None, 0)
    assert bundle.input_shape == (1, 64, 64)
    sizes = {name: len(getattr(bundle, name)) for name in ("train", "val", "test")}
    assert sizes == {"train": 2100, "val": 450, "test": 450}
    for name in ("train", "val", "test"):
        labels = _tensors(getattr(bundle, name))[1]
        assert int(labels.sum()) * 2 == len(labels), f"{name} split is not balanced"


def test_splits_are_shuffled_and_disjoint() -> None:
    images, labels = generate_phantoms(Phantom2D.Settings(**SMALL), 0)
    assert labels.sum() * 2 == len(labels)
    bundle = _load()
    test_labels = _tensors(bundle.test)[1].tolist()
    assert test_labels != sorted(test_labels), "classes are mixed in the first test samples"
    seen = torch.cat([_tensors(getattr(bundle, name))[0] for name in ("train", "val", "test")])
    assert len(seen) == len(images)
    assert torch.equal(
        seen.flatten(1).sum(1).sort().values, torch.from_numpy(images).flatten(1).sum(1).sort().values
    )


def test_lesions_are_what_the_label_says() -> None:
    # bright, sharp lesions on a clean image: every lesion saturates, no healthy tissue does
    settings = Phantom2D.Settings(
        n_samples=200,
        image_size=32,
        lesion_contrast=1.0,
        contrast_spread=1.0,
        hypo_fraction=0.0,
        noise_std=0.0,
        bias_strength=0.0,
    )
    images, labels = generate_phantoms(settings, 0)
    peaks = torch.from_numpy(images).flatten(1).amax(1)
    labels_t = torch.from_numpy(labels).bool()
    assert float(peaks[~labels_t].max()) < 0.95
    assert float((peaks[labels_t] >= 0.95).float().mean()) > 0.9


@pytest.mark.parametrize("size", [16, 224])
def test_image_size_bounds_are_accepted(size: int) -> None:
    bundle = Phantom2D().configured({"n_samples": 20, "image_size": size}).load(None, 0)
    assert bundle.input_shape == (1, size, size)
    assert bundle.test[0][0].shape == (1, size, size)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"image_size": 8}, "image_size must be between 16 and 224, got 8"),
        ({"image_size": 256}, "image_size must be between 16 and 224, got 256"),
        ({"n_samples": 4}, "n_samples must be at least 10"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "must be below 1"),
        ({"test_fraction": 0}, "test_fraction must be in"),
        ({"lesion_radius_min": 0.2, "lesion_radius_max": 0.1}, "lesion_radius_min <= lesion_radius_max"),
        ({"contrast_spread": 0.5}, "contrast_spread must be at least 1"),
    ],
)
def test_bad_settings_are_usage_errors(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=f"dataset 'phantom2d': .*{message}"):
        Phantom2D().configured(overrides)


def test_validate_raises_value_error_and_load_checks_it_too() -> None:
    with pytest.raises(ValueError, match="image_size"):
        Phantom2D.Settings(image_size=300).validate()
    with pytest.raises(UsageError, match="image_size must be between 16 and 224"):
        Phantom2D(Phantom2D.Settings(image_size=300)).load(None, 0)


def test_registers_the_builtin_datasets() -> None:
    registered: list[Any] = []
    register_datasets(registered.append)
    names = [dataset.name for dataset in registered]
    generated = ["phantom2d", "phantom3d"]
    releases = ["brain-tumor-mri", "chest-xray-pneumonia", "iq-oth-nccd", "busi", "isic2018-skin4"]
    releases += ["rsna-pneumonia", "chexpert", "chestxray14", "mura-shoulder"]
    assert names == ["phantom2d", "imagefolder", "medmnist", "phantom3d", "nifti", *releases, "dicom"]
    assert [dataset.needs_data_dir for dataset in registered] == [name not in generated for name in names]
    assert all(dataset.layout for dataset in registered if dataset.needs_data_dir)
