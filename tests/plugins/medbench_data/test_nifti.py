"""``nifti``: Decathlon/BTCV-style NIfTI volumes written by the tests."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch

from medbench.api import DatasetBundle
from medbench.errors import UsageError
from medbench.testing import check_dataset
from medbench_data.nifti import LAYOUT, Nifti

# the reference pipeline below builds MONAI's LoadImaged, which warns about a DICOM plugin
pytestmark = pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader:UserWarning")

SHAPE = (40, 32, 12)
AFFINE = np.array(
    # LPS-oriented (not RAS), 0.75 × 0.75 × 4 mm voxels
    [[-0.75, 0.0, 0.0, 15.0], [0.0, -0.75, 0.0, 12.0], [0.0, 0.0, 4.0, -24.0], [0.0, 0.0, 0.0, 1.0]]
)
CLASSES = {"0": "background", "1": "liver", "2": "kidney", "3": "bone"}
SMALL = {"patch": 16, "samples_per_volume": 2}
WINDOW = (-175.0, 250.0)


def _volume(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A CT-like volume in HU (air, fat, soft tissue, an organ, bone) and its labels."""
    image = np.full(SHAPE, -1000, dtype=np.int16)
    label = np.zeros(SHAPE, dtype=np.uint8)
    x0, y0 = rng.integers(3, 6, 2)
    image[x0 : 40 - x0, y0 : 32 - y0, :] = 40  # body, soft tissue
    image[x0 + 2 : x0 + 5, y0 : 32 - y0, :] = -175  # a fat layer exactly at the window's floor
    ox = int(rng.integers(10, 14))
    image[ox : ox + 10, 8:18, 2:10] = 150
    label[ox : ox + 10, 8:18, 2:10] = 1
    image[26:32, 18:24, 4:8] = 120
    label[26:32, 18:24, 4:8] = 2
    image[18:22, 22:26, :] = 700  # bone, above the window
    label[18:22, 22:26, :] = 3
    return image, label


def _write_nifti(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))


def _write_dataset(
    root: Path, n_train: int = 3, n_val: int = 2, extra: dict[str, Any] | None = None, seed: int = 0
) -> Path:
    rng = np.random.default_rng(seed)
    entries = []
    for index in range(n_train + n_val):
        image, label = _volume(rng)
        _write_nifti(root / "imagesTr" / f"img{index:04d}.nii.gz", image)
        _write_nifti(root / "labelsTr" / f"label{index:04d}.nii.gz", label)
        entries.append(
            {"image": f"imagesTr/img{index:04d}.nii.gz", "label": f"labelsTr/label{index:04d}.nii.gz"}
        )
    spec: dict[str, Any] = {
        "labels": CLASSES,
        "training": entries[:n_train],
        "validation": entries[n_train:],
        **(extra or {}),
    }
    (root / "dataset.json").write_text(json.dumps(spec))
    return root


def _spec(root: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((root / "dataset.json").read_text())
    return result


def _rewrite(root: Path, **changes: Any) -> None:
    """Change keys of the split file; None removes a key."""
    spec = {key: value for key, value in {**_spec(root), **changes}.items() if value is not None}
    (root / "dataset.json").write_text(json.dumps(spec))


def _load(root: Path | None, seed: int = 0, **overrides: Any) -> DatasetBundle:
    return Nifti().configured({**SMALL, **overrides}).load(root, seed)


def _monai_reference(root: Path, entry: dict[str, str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference BTCV validation transforms applied directly, in MONAI's (C, X, Y, Z) layout."""
    from monai.transforms import (
        Compose,
        CropForegroundd,
        EnsureChannelFirstd,
        LoadImaged,
        Orientationd,
        ScaleIntensityRanged,
        Spacingd,
    )

    keys = ["image", "label"]
    transform = Compose(
        [
            LoadImaged(keys=keys),
            EnsureChannelFirstd(keys=keys),
            Orientationd(keys=keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
            Spacingd(keys=keys, pixdim=(1.5, 1.5, 2.0), mode=("bilinear", "nearest")),
            ScaleIntensityRanged(keys="image", a_min=-175, a_max=250, b_min=0.0, b_max=1.0, clip=True),
            CropForegroundd(keys=keys, source_key="image"),
        ]
    )
    data = transform({key: str(root / entry[key]) for key in keys})
    return data["image"].as_tensor(), data["label"].as_tensor()


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_dataset(tmp_path_factory.mktemp("btcv"))


def test_metadata_and_contract(dataset_dir: Path) -> None:
    bundle = _load(dataset_dir)
    assert bundle.task == "segmentation" and bundle.modality == "ct"
    assert bundle.intensity_window == (-175.0, 250.0) and bundle.intensity_unit == "HU"
    assert bundle.class_names == ("background", "liver", "kidney", "bone")
    assert bundle.input_shape == (1, -1, -1, -1)
    assert len(bundle.fingerprint) == 32
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (3 * 2, 2, 2)
    assert Nifti.task == "segmentation" and Nifti.dims == 3 and Nifti.needs_data_dir
    assert Nifti.layout == LAYOUT and "\n" not in LAYOUT and "dataset.json" in LAYOUT
    assert Nifti.description and "\n" not in Nifti.description


def test_volumes_match_the_monai_reference_depth_first(dataset_dir: Path) -> None:
    bundle = _load(dataset_dir)
    for index, entry in enumerate(_spec(dataset_dir)["validation"]):
        image, label = bundle.val[index]
        ref_image, ref_label = _monai_reference(dataset_dir, entry)
        # resampled to 1.5 × 1.5 × 2 mm then cropped to the body: (C, X, Y, Z) in MONAI
        assert ref_image.shape[-1] > 20 and ref_image.shape[1] < 30, ref_image.shape
        assert image.dtype == torch.float32 and label.dtype == torch.int64
        assert image.shape == (1, ref_image.shape[3], ref_image.shape[1], ref_image.shape[2])
        assert label.shape == image.shape[1:]
        assert torch.equal(image, ref_image.permute(0, 3, 1, 2))
        assert torch.equal(label, ref_label[0].permute(2, 0, 1).long())
    assert bundle.test[0][0] is bundle.val[0][0], "test = validation, from the same cache"


def test_intensities_follow_the_window(dataset_dir: Path) -> None:
    image, label = _load(dataset_dir).val[0]
    assert float(image.min()) == 0.0 and float(image.max()) == 1.0
    soft = (40 - WINDOW[0]) / (WINDOW[1] - WINDOW[0])
    assert float((image - soft).abs().lt(1e-4).float().mean()) > 0.3, "the body is soft tissue"
    assert float(image[0][label == 3].median()) == 1.0, "700 HU bone is clipped to 1"
    assert float((image < 1e-4).float().mean()) > 0.02, "the -175 HU fat layer maps to 0"
    assert set(label.unique().tolist()) == {0, 1, 2, 3}


def test_orientation_puts_superior_slices_last_on_the_depth_axis(tmp_path: Path) -> None:
    # a bright marker in the most superior slices and, the x axis pointing left (LPS), on the patient's right
    root = _write_dataset(tmp_path / "data", n_train=1, n_val=1)
    entry = _spec(root)["validation"][0]
    image = np.asarray(nib.load(str(root / entry["image"])).dataobj).copy()
    image[image > 250] = 40  # no bone: the marker is the only voxel group above the window
    image[5:8, 10:14, 10:12] = 700
    _write_nifti(root / entry["image"], image)
    volume, _ = _load(root).val[0]
    bright = (volume[0] == 1.0).nonzero().float().mean(0)
    depth, width = volume.shape[1], volume.shape[2]
    assert bright[0] > depth * 0.75, "superior is the end of the depth axis (RAS)"
    assert bright[1] > width * 0.6, "the patient's right is the high end of the first in-plane axis (RAS)"


def test_train_crops_have_the_patch_shape_contain_foreground_and_repeat(dataset_dir: Path) -> None:
    first, again = _load(dataset_dir, seed=5), _load(dataset_dir, seed=5)
    other = _load(dataset_dir, seed=6)
    differs = False
    for index in range(len(first.train)):
        image, label = first.train[index]
        assert image.shape == (1, 16, 16, 16) and image.dtype == torch.float32
        assert label.shape == (16, 16, 16) and label.dtype == torch.int64
        assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
        assert bool((label > 0).any()), "small volumes: every crop holds some organ"
        same_image, same_label = again.train[index]
        assert torch.equal(image, same_image) and torch.equal(label, same_label)
        differs |= not torch.equal(image, other.train[index][0])
    assert differs, "another seed draws other crops"
    reversed_items = [first.train[i][0] for i in reversed(range(len(first.train)))]
    assert torch.equal(reversed_items[-1], first.train[0][0]), "crops do not depend on the access order"


def test_large_patches_pad_small_volumes_and_augment_can_be_off(dataset_dir: Path) -> None:
    bundle = _load(dataset_dir, patch=32, augment=False)
    image, label = bundle.train[0]
    assert image.shape == (1, 32, 32, 32) and label.shape == (32, 32, 32)
    assert float(image.sum()) > 0 and bool((label > 0).any())


def test_spatial_size_fixes_the_volume_shape(dataset_dir: Path) -> None:
    bundle = check_dataset(Nifti().configured({"spatial_size": 24, "patch": 24}), dataset_dir)
    assert bundle.input_shape == (1, 24, 24, 24)
    for split in (bundle.train, bundle.val):
        image, label = split[0]
        assert image.shape == (1, 24, 24, 24) and label.shape == (24, 24, 24)


def test_minmax_intensity_and_spacing_settings(dataset_dir: Path) -> None:
    bundle = _load(dataset_dir, intensity="minmax", spacing=(3.0, 3.0, 4.0))
    assert bundle.modality == "mri"
    assert bundle.intensity_window is None and bundle.intensity_unit == ""
    image, label = bundle.val[0]
    assert float(image.max()) == 1.0 and float(image.min()) >= 0.0
    # about half as many voxels in-plane (1.5 → 3 mm), (12 - 1) slices × 4 mm / 4 mm along z
    assert image.shape[1] == 12 and image.shape[2] < 14 and image.shape[3] < 12, image.shape
    assert label.shape == image.shape[1:]


def test_test_split_class_names_and_unlabelled_test_entries(tmp_path: Path) -> None:
    root = _write_dataset(tmp_path / "data", n_train=1, n_val=2)
    spec = _spec(root)
    _rewrite(root, test=[spec["validation"][1]], validation=[spec["validation"][0]])
    bundle = _load(root)
    assert (len(bundle.val), len(bundle.test)) == (1, 1)
    reference = _monai_reference(root, spec["validation"][1])[0].permute(0, 3, 1, 2)
    assert torch.equal(bundle.test[0][0], reference), "test holds the pair listed under test"
    # BTCV's split files list unlabelled test images: they are ignored, test = validation
    _rewrite(root, test=[{"image": "imagesTs/img0061.nii.gz"}], validation=spec["validation"])
    bundle = _load(root, class_names=("bg", "a", "b", "c", "d"))
    assert len(bundle.test) == 2 and bundle.test is bundle.val
    assert bundle.class_names == ("bg", "a", "b", "c", "d"), "the setting overrides the JSON labels"


def test_fingerprint_tracks_settings_seed_split_file_and_files(tmp_path: Path) -> None:
    root = _write_dataset(tmp_path / "data", n_train=1, n_val=1)
    base = _load(root).fingerprint
    assert _load(root).fingerprint == base
    assert _load(root, seed=1).fingerprint != base
    assert _load(root, a_max=300.0).fingerprint != base
    image = root / _spec(root)["training"][0]["image"]
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    touched = _load(root).fingerprint
    assert touched != base
    _rewrite(root, description="same pairs")
    assert _load(root).fingerprint != touched


# --------------------------------------------------------------------------- errors


def test_missing_folder_and_split_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="nifti needs --data-dir; expected layout: DATA_DIR/"):
        _load(None)
    with pytest.raises(UsageError, match="missing is not a directory; expected layout"):
        _load(tmp_path / "missing")
    with pytest.raises(UsageError, match=r"split file .*dataset\.json not found; expected layout"):
        _load(tmp_path)
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(UsageError, match=r"dataset\.json is not valid JSON \(.*\); expected layout"):
        _load(tmp_path)
    (tmp_path / "dataset.json").write_text("[]")
    with pytest.raises(UsageError, match="must hold a JSON object"):
        _load(tmp_path)
    (tmp_path / "splits.json").write_text("{}")
    with pytest.raises(UsageError, match=r'"training" in split file .*splits\.json is missing'):
        _load(tmp_path, split_file="splits.json")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"validation": None}, r'"validation" in split file .*dataset\.json is missing'),
        ({"training": []}, r'"training" in split file .* is empty or not a list'),
        ({"training": ["imagesTr/img0000.nii.gz"]}, r'entry 0 of "training" .* must be \{"image": path'),
        ({"training": [{"image": "imagesTr/img0000.nii.gz"}]}, r'must be \{"image": path, "label": path\}'),
        (
            {"validation": [{"image": "imagesTr/nope.nii.gz", "label": "labelsTr/label0000.nii.gz"}]},
            r"lists 'imagesTr/nope\.nii\.gz', but .*nope\.nii\.gz does not exist",
        ),
        (
            {"training": [{"image": "../outside.nii.gz", "label": "labelsTr/label0000.nii.gz"}]},
            "paths must be relative to .*, without ..",
        ),
        (
            {"training": [{"image": "/etc/passwd", "label": "labelsTr/label0000.nii.gz"}]},
            "paths must be relative to",
        ),
        ({"labels": None}, r'has no "labels" and the class_names setting is empty; add "labels"'),
        ({"labels": {"0": "background", "2": "kidney"}}, "without gaps, got indices"),
        ({"labels": ["background", "liver"]}, '"labels" in .* must map class indices to names'),
        ({"labels": {"0": "background", "1": "liver"}}, r"has values 0\.\.3 but there are 2 classes"),
        (
            {
                "test": [
                    {"image": "imagesTr/img0000.nii.gz", "label": "labelsTr/label0000.nii.gz"},
                    {"image": "x"},
                ]
            },
            'some "test" entries .* have a "label" and some not',
        ),
    ],
)
def test_malformed_split_files(tmp_path: Path, changes: dict[str, Any], message: str) -> None:
    root = _write_dataset(tmp_path / "data", n_train=1, n_val=1)
    _rewrite(root, **changes)
    with pytest.raises(UsageError, match=message):
        _load(root)


def test_symlinks_out_of_the_folder_are_refused(tmp_path: Path) -> None:
    root = _write_dataset(tmp_path / "data", n_train=1, n_val=1)
    outside = tmp_path / "elsewhere.nii.gz"
    (root / "imagesTr" / "img0000.nii.gz").rename(outside)
    (root / "imagesTr" / "img0000.nii.gz").symlink_to(outside)
    with pytest.raises(UsageError, match=r"leads outside .* through a symlink"):
        _load(root)
    inside = root / "imagesTr" / "link.nii.gz"
    inside.symlink_to(root / "imagesTr" / "img0001.nii.gz")
    _rewrite(root, training=[{"image": "imagesTr/link.nii.gz", "label": "labelsTr/label0001.nii.gz"}])
    assert len(_load(root).train) == 2, "a symlink inside the folder is fine"


@pytest.mark.parametrize(
    ("which", "array", "message"),
    [
        ("image", np.zeros((40, 32), np.int16), r"image .*img0000\.nii\.gz must be a single 3-D volume"),
        ("image", np.zeros((*SHAPE, 2), np.int16), r"image .* got 2 channel\(s\) of shape \(40, 32, 12\)"),
        (
            "label",
            np.zeros((40, 32, 10), np.uint8),
            r"label .*label0000\.nii\.gz has shape \(40, 32, 10\) but",
        ),
        ("label", np.full(SHAPE, 1.5, np.float32), "label .* holds non-integer values"),
        (
            "label",
            np.full(SHAPE, 7, np.uint8),
            r"label .* has values 7\.\.7 but there are 4 classes \(0\.\.3\)",
        ),
        (
            "image",
            np.full(SHAPE, -1000, np.int16),
            "image .* is all background .*; check the a_min/a_max window",
        ),
    ],
)
def test_bad_volumes_are_reported_at_load(
    tmp_path: Path, which: str, array: np.ndarray, message: str
) -> None:
    root = _write_dataset(tmp_path / "data", n_train=1, n_val=1)
    folder, stem = ("imagesTr", "img") if which == "image" else ("labelsTr", "label")
    _write_nifti(root / folder / f"{stem}0000.nii.gz", array)
    with pytest.raises(UsageError, match=f"^nifti: {message}"):
        _load(root)


def test_unreadable_file(tmp_path: Path) -> None:
    root = _write_dataset(tmp_path / "data", n_train=1, n_val=1)
    (root / "labelsTr" / "label0001.nii.gz").write_bytes(b"not a nifti file")
    with pytest.raises(UsageError, match=r"cannot read label .*label0001\.nii\.gz: \w+"):
        _load(root)


def test_later_volumes_are_checked_when_first_used(tmp_path: Path) -> None:
    root = _write_dataset(tmp_path / "data", n_train=2, n_val=1)
    _write_nifti(root / "labelsTr" / "label0001.nii.gz", np.full(SHAPE, 9, np.uint8))
    bundle = _load(root)
    bundle.train[0]
    with pytest.raises(UsageError, match=r"label .*label0001\.nii\.gz has values 9\.\.9"):
        bundle.train[2]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"spacing": "1.5,1.5"}, "spacing must be three positive sizes"),
        ({"spacing": (1.0, 0.0, 1.0)}, "spacing must be three positive sizes"),
        ({"intensity": "zscore"}, "intensity must be one of 'window', 'minmax'"),
        ({"a_min": 300.0}, "a_min must be below a_max"),
        ({"patch": 0}, "patch must be positive"),
        ({"samples_per_volume": 0}, "samples_per_volume must be at least 1"),
        ({"spatial_size": 0}, "spatial_size must be positive or None"),
        ({"class_names": "background"}, "class_names needs at least two names"),
        ({"class_names": "a,a"}, "class_names must be unique"),
        ({"split_file": "../dataset.json"}, "split_file must be a path inside DATA_DIR"),
    ],
)
def test_bad_settings_are_usage_errors(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=f"dataset 'nifti': .*{message}"):
        Nifti().configured(overrides)


def test_a_matrix_runs_on_a_nifti_folder_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Variable-sized volumes: training on crops, patch-wise attacks, sliding-window evaluation."""
    from mlflow import MlflowClient

    from medbench.cli import main

    root = _write_dataset(tmp_path / "synapse", n_train=2, n_val=1)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["run", "--dataset", "nifti", "--data-dir", str(root), "--model", "unetr-tiny"]
    args += ["--set", "model.unetr-tiny.roi=16", "--set", "dataset.nifti.patch=16"]
    args += ["--set", "dataset.nifti.samples_per_volume=2", "--defense", "none", "--attack", "pgd,vafa"]
    args += ["--eps", "4/255", "--budget", "q_max=20", "--set", "attack.pgd.max_iter=2"]
    args += ["--set", "attack.vafa.steps=2", "--epochs", "1", "--tracking-uri", uri, "--json"]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    assert exit_info.value.code in (0, None), captured.err
    cells = json.loads(captured.out)["cells"]
    assert [cell["attack"] for cell in cells] == ["pgd", "vafa"]
    client = MlflowClient(tracking_uri=uri)
    for cell in cells:
        run = client.get_run(cell["run_id"])
        assert run.info.status == "FINISHED"
        assert 0 <= run.data.metrics["robust_dice"] <= 1
        assert run.data.params["dataset"] == "nifti"
    assert cells[0]["metrics"]["linf_max"] <= 4 / 255 + 1e-6
