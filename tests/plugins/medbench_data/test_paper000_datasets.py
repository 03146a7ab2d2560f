"""``brain-tumor-mri``, ``chest-xray-pneumonia``, ``iq-oth-nccd`` and ``busi`` on miniature
copies of each public release's layout, written by the tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from medbench.api import DatasetBundle
from medbench.errors import UsageError
from medbench.testing import check_dataset
from medbench_data._folder_images import ImageFileSplit
from medbench_data.brain_tumor_mri import BrainTumorMRI
from medbench_data.busi import BUSI
from medbench_data.chest_xray_pneumonia import ChestXrayPneumonia
from medbench_data.iq_oth_nccd import IQOTHNCCD

SMALL = {"image_size": 16}
_counter = iter(range(1_000_000))


def _image(path: Path, *, rgb: bool = False, size: tuple[int, int] = (40, 32)) -> Path:
    """A small random image (40 wide, 32 high by default), different in every call."""
    rng = np.random.default_rng(next(_counter))
    shape = (size[1], size[0], 3) if rgb else (size[1], size[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
    return path


def _counts(bundle: DatasetBundle) -> list[int]:
    labels = torch.cat([split.labels for split in (bundle.train, bundle.val, bundle.test)])
    return torch.bincount(labels, minlength=bundle.num_classes).tolist()


def _files(bundle: DatasetBundle) -> set[str]:
    splits = (bundle.train, bundle.val, bundle.test)
    assert all(isinstance(split, ImageFileSplit) for split in splits)
    return {p.name for split in splits for p in split.paths}


def _brain(root: Path) -> Path:
    counts = {
        "Training": {"glioma": 4, "meningioma": 3, "notumor": 6, "pituitary": 3},
        "Testing": {"glioma": 1, "meningioma": 1, "notumor": 2, "pituitary": 1},
    }
    for release, classes in counts.items():
        prefix = "Tr" if release == "Training" else "Te"
        for folder, n in classes.items():
            for i in range(n):
                _image(root / release / folder / f"{prefix}-{folder[:2]}_{i:04d}.jpg")
    return root


def _chest(parent: Path) -> Path:
    root = parent / "chest_xray"
    for split, (normal, pneumonia) in {"train": (4, 8), "val": (1, 1), "test": (2, 3)}.items():
        for i in range(normal):
            _image(root / split / "NORMAL" / f"IM-{i:04d}-0001.jpeg")
        for i in range(pneumonia):
            kind = "bacteria" if i % 2 else "virus"
            _image(root / split / "PNEUMONIA" / f"person{i}_{kind}_{i + 1}.jpeg")
    # what the Kaggle zip also holds: a macOS resource folder and a hidden AppleDouble file
    (parent / "__MACOSX").mkdir()
    (root / "train" / "NORMAL" / "._IM-0000-0001.jpeg").write_bytes(b"\x00\x05\x16\x07")
    return parent


def _iq(parent: Path, benign: str = "Bengin") -> Path:
    root = parent / "The IQ-OTHNCCD lung cancer dataset"
    for folder, n in ((f"{benign} cases", 2), ("Normal cases", 4), ("Malignant cases", 9)):
        for i in range(n):
            _image(root / folder / f"{folder[:-1]} ({i + 1}).jpg")
    return parent


def _busi(parent: Path) -> Path:
    root = parent / "Dataset_BUSI_with_GT"
    for folder, n in (("benign", 4), ("normal", 2), ("malignant", 7)):
        for i in range(1, n + 1):
            _image(root / folder / f"{folder} ({i}).png", rgb=True, size=(40, 36))
            mask = np.zeros((36, 40), np.uint8)
            mask[10:20, 10:30] = 255
            Image.fromarray(mask).save(root / folder / f"{folder} ({i})_mask.png")
        Image.fromarray(np.zeros((36, 40), np.uint8)).save(root / folder / f"{folder} (1)_mask_1.png")
    return parent


def test_brain_tumor_mri_groups_tumors_and_balances(tmp_path: Path) -> None:
    root = _brain(tmp_path / "brain")
    bundle = check_dataset(BrainTumorMRI().configured(SMALL), root)
    assert bundle.class_names == ("no-tumor", "tumor")
    assert bundle.input_shape == (1, 16, 16) and bundle.modality == "mri"
    assert _counts(bundle) == [6, 6], "Training/ only: 6 no-tumor, 10 tumors downsampled to 6"
    assert [len(bundle.train), len(bundle.val), len(bundle.test)] == [8, 2, 2]
    both = BrainTumorMRI().configured({**SMALL, "release_folders": "Training,Testing"}).load(root, 0)
    assert _counts(both) == [8, 8]
    unbalanced = BrainTumorMRI().configured({**SMALL, "balance": False, "preload_mb": 0}).load(root, 0)
    assert _counts(unbalanced) == [6, 10]
    names = _files(unbalanced)
    assert {n[:5] for n in names} == {"Tr-no", "Tr-gl", "Tr-me", "Tr-pi"}, "the tumor types are pooled"


def test_brain_tumor_mri_default_settings_follow_the_paper() -> None:
    settings = BrainTumorMRI().settings
    assert (settings.image_size, settings.channels, settings.balance) == (224, 1, True)
    assert settings.release_folders == ("Training",)
    with pytest.raises(UsageError, match="release_folders: unknown Validation"):
        BrainTumorMRI().configured({"release_folders": "Training,Validation"})
    with pytest.raises(UsageError, match="channels must be 1 or 3"):
        BrainTumorMRI().configured({"channels": 2})


def test_seed_decides_the_downsampling_and_the_split(tmp_path: Path) -> None:
    root = _brain(tmp_path / "brain")
    lazy = BrainTumorMRI().configured({**SMALL, "preload_mb": 0})
    first, again = lazy.load(root, 0), lazy.load(root, 0)
    assert first.fingerprint == again.fingerprint and _files(first) == _files(again)
    assert [p.name for p in first.test.paths] == [p.name for p in again.test.paths]
    chosen = {seed: _files(lazy.load(root, seed)) for seed in range(4)}
    assert len({frozenset(files) for files in chosen.values()}) > 1, "the seed picks the tumors kept"
    assert all(
        {f for f in files if f.startswith("Tr-no")} == {f"Tr-no_{i:04d}.jpg" for i in range(6)}
        for files in chosen.values()
    ), "the smaller class is kept whole"
    assert lazy.load(root, 1).fingerprint != first.fingerprint


def test_lazy_and_preloaded_items_are_identical(tmp_path: Path) -> None:
    root = _brain(tmp_path / "brain")
    lazy = BrainTumorMRI().configured({**SMALL, "preload_mb": 0}).load(root, 5)
    eager = BrainTumorMRI().configured(SMALL).load(root, 5)
    assert isinstance(lazy.test, ImageFileSplit) and not isinstance(eager.test, ImageFileSplit)
    assert lazy.fingerprint == eager.fingerprint, "preload_mb does not change the data"
    for split in ("train", "val", "test"):
        for (x_lazy, y_lazy), (x_eager, y_eager) in zip(
            getattr(lazy, split), getattr(eager, split), strict=True
        ):
            assert (
                x_lazy.dtype == torch.float32 and torch.equal(x_lazy, x_eager) and int(y_lazy) == int(y_eager)
            )


def test_fingerprint_follows_files_and_settings(tmp_path: Path) -> None:
    root = _brain(tmp_path / "brain")
    dataset = BrainTumorMRI().configured(SMALL)
    before = dataset.load(root, 0).fingerprint
    _image(root / "Training" / "notumor" / "Tr-no_0000.jpg")  # new content, same name (always kept)
    changed = dataset.load(root, 0).fingerprint
    assert changed != before
    assert BrainTumorMRI().configured({"image_size": 20}).load(root, 0).fingerprint != changed
    assert BrainTumorMRI().configured({**SMALL, "channels": 3}).load(root, 0).fingerprint != changed


def test_chest_xray_pools_release_splits_from_parent_or_chest_xray(tmp_path: Path) -> None:
    parent = _chest(tmp_path / "download")
    bundle = check_dataset(ChestXrayPneumonia().configured(SMALL), parent)
    assert bundle.class_names == ("normal", "pneumonia") and bundle.modality == "xray"
    assert _counts(bundle) == [7, 7], "7 NORMAL of train+val+test, PNEUMONIA downsampled from 12"
    direct = ChestXrayPneumonia().configured(SMALL).load(parent / "chest_xray", 0)
    assert direct.fingerprint == bundle.fingerprint
    train_only = ChestXrayPneumonia().configured({**SMALL, "release_folders": ["train"]}).load(parent, 0)
    assert _counts(train_only) == [4, 4]
    raw = ChestXrayPneumonia().configured({**SMALL, "balance": False, "preload_mb": 0}).load(parent, 0)
    assert _counts(raw) == [7, 12]
    assert not any(name.startswith(".") for name in _files(raw)), "AppleDouble files are skipped"


def test_chest_xray_accepts_the_duplicated_nested_folder(tmp_path: Path) -> None:
    parent = _chest(tmp_path / "download")
    nested = parent / "chest_xray" / "chest_xray"
    for path in (parent / "chest_xray" / "val").rglob("*.jpeg"):
        _image(nested / path.relative_to(parent / "chest_xray"))
    bundle = ChestXrayPneumonia().configured(SMALL).load(parent, 0)
    assert _counts(bundle) == [7, 7], "the outer copy is read, the nested duplicate ignored"


@pytest.mark.parametrize("spelling", ["Bengin", "Benign"])
def test_iq_oth_nccd_groups_normal_and_benign(tmp_path: Path, spelling: str) -> None:
    parent = _iq(tmp_path / "iq", spelling)
    bundle = check_dataset(IQOTHNCCD().configured(SMALL), parent)
    assert bundle.class_names == ("no-cancer", "cancer") and bundle.modality == "ct"
    assert _counts(bundle) == [6, 6], "2 benign + 4 normal vs 9 malignant downsampled to 6"
    raw = IQOTHNCCD().configured({**SMALL, "balance": False, "preload_mb": 0}).load(parent, 0)
    assert _counts(raw) == [6, 9]
    labels = {
        p.name: int(y)
        for split in (raw.train, raw.val, raw.test)
        for p, y in zip(split.paths, split.labels, strict=True)
    }
    assert {name.split(" ")[0] for name, y in labels.items() if y == 0} == {spelling, "Normal"}
    assert {name.split(" ")[0] for name, y in labels.items() if y == 1} == {"Malignant"}


def test_busi_excludes_masks_and_groups_normal_and_benign(tmp_path: Path) -> None:
    parent = _busi(tmp_path / "busi")
    bundle = check_dataset(BUSI().configured(SMALL), parent)
    assert bundle.class_names == ("no-cancer", "cancer") and bundle.modality == "ultrasound"
    assert bundle.input_shape == (1, 16, 16), "RGB PNGs become grayscale, as the paper's (224, 224, 1)"
    assert _counts(bundle) == [6, 6]
    raw = (
        BUSI()
        .configured({**SMALL, "balance": False, "preload_mb": 0})
        .load(parent / "Dataset_BUSI_with_GT", 0)
    )
    assert _counts(raw) == [6, 7], "13 images; the 26 masks beside them are not samples"
    assert not any("mask" in name for name in _files(raw))
    rgb = BUSI().configured({**SMALL, "channels": 3}).load(parent, 0)
    assert rgb.input_shape == (3, 16, 16) and rgb.test[0][0].shape == (3, 16, 16)


CASES: list[tuple[Any, str]] = [
    (BrainTumorMRI, "Training/notumor"),
    (ChestXrayPneumonia, "train/NORMAL"),
    (IQOTHNCCD, "Normal cases"),
    (BUSI, "normal"),
]


@pytest.mark.parametrize(("cls", "first_folder"), CASES, ids=[c.name for c, _ in CASES])
def test_wrong_paths_name_the_path_and_the_layout(tmp_path: Path, cls: Any, first_folder: str) -> None:
    dataset = cls()
    layout = dataset.layout
    with pytest.raises(UsageError, match=f"{dataset.name} needs --data-dir; expected layout: "):
        dataset.load(None, 0)
    missing = tmp_path / "missing"
    with pytest.raises(UsageError) as error:
        dataset.load(missing, 0)
    assert str(error.value) == f"{dataset.name}: {missing} is not a directory; expected layout: {layout}"
    empty = tmp_path / "empty"
    (empty / "unrelated").mkdir(parents=True)
    with pytest.raises(UsageError) as error:
        dataset.load(empty, 0)
    message = str(error.value)
    assert message.startswith(f"{dataset.name}: {empty} lacks {first_folder}")
    assert message.endswith(f"expected layout: {layout}") and "\n" not in message


def test_empty_class_folder_and_broken_image_are_named(tmp_path: Path) -> None:
    parent = _iq(tmp_path / "iq")
    folder = parent / "The IQ-OTHNCCD lung cancer dataset" / "Bengin cases"
    for path in folder.iterdir():
        path.unlink()
    with pytest.raises(UsageError, match=f"iq-oth-nccd: {folder} has no PNG/JPEG images; expected layout"):
        IQOTHNCCD().load(parent, 0)
    broken = folder / "Bengin case (9).jpg"
    broken.write_bytes(b"\xff\xd8 truncated")
    for preload_mb in (256, 0):
        dataset = IQOTHNCCD().configured({**SMALL, "balance": False, "preload_mb": preload_mb})
        with pytest.raises(UsageError, match=r"iq-oth-nccd: cannot decode image .*Bengin case \(9\)\.jpg"):
            dataset.load(parent, 0)
