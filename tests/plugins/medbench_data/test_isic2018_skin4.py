"""``isic2018-skin4`` on a miniature copy of the ISIC 2018 Task 3 training release."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medbench.api import DatasetBundle
from medbench.errors import UsageError
from medbench.testing import check_dataset
from medbench_data._folder_images import ImageFileSplit
from medbench_data.isic2018_skin4 import ISIC2018Skin4

COLUMNS = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")
COUNTS = {"MEL": 6, "NV": 12, "BCC": 6, "AKIEC": 2, "BKL": 6, "DF": 1, "VASC": 1}
SMALL = {"image_size": 16, "nv_samples": 6}
INPUT = "ISIC2018_Task3_Training_Input"
TRUTH = "ISIC2018_Task3_Training_GroundTruth"


def _release(root: Path) -> Path:
    """Images ``ISIC_00243xx.jpg`` (40 × 32 RGB) and the one-hot ground-truth CSV, interleaved."""
    rng = np.random.default_rng(0)
    (root / INPUT).mkdir(parents=True)
    (root / TRUTH).mkdir()
    (root / INPUT / "ATTRIBUTION.txt").write_text("ISIC archive\n")
    (root / INPUT / "LICENSE.txt").write_text("CC-BY-NC\n")
    diagnoses = [name for name, n in COUNTS.items() for _ in range(n)]
    rng.shuffle(diagnoses)
    lines = ["image," + ",".join(COLUMNS)]
    for index, diagnosis in enumerate(diagnoses):
        image_id = f"ISIC_{24306 + index:07d}"
        pixels = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels, "RGB").save(root / INPUT / f"{image_id}.jpg", quality=95)
        lines.append(image_id + "," + ",".join("1.0" if c == diagnosis else "0.0" for c in COLUMNS))
    (root / TRUTH / f"{TRUTH}.csv").write_text("\n".join(lines) + "\n")
    return root


def _counts(bundle: DatasetBundle) -> list[int]:
    labels = torch.cat([split.labels for split in (bundle.train, bundle.val, bundle.test)])
    return torch.bincount(labels, minlength=bundle.num_classes).tolist()


def _nv_files(bundle: DatasetBundle) -> set[str]:
    splits = (bundle.train, bundle.val, bundle.test)
    assert all(isinstance(split, ImageFileSplit) for split in splits)
    return {p.name for split in splits for p, y in zip(split.paths, split.labels, strict=True) if int(y) == 1}


def test_skin4_keeps_four_classes_and_caps_nv(tmp_path: Path) -> None:
    root = _release(tmp_path / "isic")
    bundle = check_dataset(ISIC2018Skin4().configured(SMALL), root)
    assert bundle.class_names == ("MEL", "NV", "BCC", "BKL")
    assert bundle.input_shape == (3, 16, 16) and bundle.modality == "dermoscopy"
    assert _counts(bundle) == [6, 6, 6, 6], "AKIEC, DF, VASC dropped; NV sampled from 12 to 6"
    assert [len(bundle.train), len(bundle.val), len(bundle.test)] == [16, 4, 4], "70/10/20 per class"
    uncapped = ISIC2018Skin4().configured({**SMALL, "nv_samples": 0}).load(root, 0)
    assert _counts(uncapped) == [6, 12, 6, 6]
    image, label = bundle.test[0]
    assert image.dtype == torch.float32 and image.shape == (3, 16, 16) and label.dtype == torch.int64
    assert not torch.equal(image[0], image[1]), "RGB channels are kept apart"


def test_skin4_labels_follow_the_csv(tmp_path: Path) -> None:
    root = _release(tmp_path / "isic")
    bundle = ISIC2018Skin4().configured({**SMALL, "nv_samples": 0, "preload_mb": 0}).load(root, 0)
    rows = (root / TRUTH / f"{TRUTH}.csv").read_text().splitlines()[1:]
    truth = {cells[0]: COLUMNS[cells[1:].index("1.0")] for cells in (row.split(",") for row in rows)}
    for split in (bundle.train, bundle.val, bundle.test):
        for path, label in zip(split.paths, split.labels, strict=True):
            assert bundle.class_names[int(label)] == truth[path.stem]


def test_skin4_defaults_follow_paper_001() -> None:
    settings = ISIC2018Skin4().settings
    assert (settings.image_size, settings.channels, settings.nv_samples) == (224, 3, 1500)
    assert (settings.val_fraction, settings.test_fraction) == (0.1, 0.2)
    with pytest.raises(UsageError, match="nv_samples must be >= 0"):
        ISIC2018Skin4().configured({"nv_samples": -1})


def test_skin4_seed_picks_the_nv_images(tmp_path: Path) -> None:
    root = _release(tmp_path / "isic")
    lazy = ISIC2018Skin4().configured({**SMALL, "preload_mb": 0})
    first = lazy.load(root, 0)
    assert _nv_files(first) == _nv_files(lazy.load(root, 0))
    assert first.fingerprint == ISIC2018Skin4().configured(SMALL).load(root, 0).fingerprint
    picks = {frozenset(_nv_files(lazy.load(root, seed))) for seed in range(4)}
    assert len(picks) > 1 and all(len(p) == 6 for p in picks)
    assert lazy.load(root, 1).fingerprint != first.fingerprint


def test_skin4_finds_the_release_below_data_dir(tmp_path: Path) -> None:
    _release(tmp_path / "download" / "isic2018")
    assert ISIC2018Skin4().configured(SMALL).load(tmp_path / "download", 0).num_classes == 4


def test_skin4_errors_name_the_path_and_layout(tmp_path: Path) -> None:
    dataset = ISIC2018Skin4().configured(SMALL)
    layout = dataset.layout
    with pytest.raises(UsageError, match="isic2018-skin4 needs --data-dir"):
        dataset.load(None, 0)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError) as error:
        dataset.load(empty, 0)
    expected = f"isic2018-skin4: {empty} lacks {INPUT}, {TRUTH}/{TRUTH}.csv; expected layout: {layout}"
    assert str(error.value) == expected
    root = _release(tmp_path / "isic")
    table = root / TRUTH / f"{TRUTH}.csv"
    lines = table.read_text().splitlines()
    number, missing_id = next(
        (n, line.split(",")[0])
        for n, line in enumerate(lines, 1)
        if n > 1 and COLUMNS[line.split(",")[1:].index("1.0")] in ("MEL", "NV", "BCC", "BKL")
    )
    (root / INPUT / f"{missing_id}.jpg").unlink()
    with pytest.raises(UsageError, match=f"line {number} lists {missing_id}, not found in .*{INPUT}"):
        dataset.load(root, 0)
    table.write_text("\n".join([lines[0], lines[1].replace("0.0", "1.0", 1)]) + "\n")
    with pytest.raises(UsageError, match=r"\.csv line 2 is not one-hot"):
        dataset.load(root, 0)
    table.write_text("image,MEL,NV\nISIC_1,1,0\n")
    with pytest.raises(UsageError, match="lacks the columns BCC, AKIEC, BKL, DF, VASC"):
        dataset.load(root, 0)


def test_skin4_broken_image_is_named(tmp_path: Path) -> None:
    root = _release(tmp_path / "isic")
    lines = (root / TRUTH / f"{TRUTH}.csv").read_text().splitlines()
    mel = next(line.split(",")[0] for line in lines[1:] if line.split(",")[1] == "1.0")
    (root / INPUT / f"{mel}.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UsageError, match=f"isic2018-skin4: cannot decode image .*{mel}\\.jpg"):
        ISIC2018Skin4().configured(SMALL).load(root, 0)
