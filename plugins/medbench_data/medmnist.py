"""``medmnist``: a local MedMNIST (v2 / MedMNIST+) ``.npz`` file, read offline."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from medbench.api import Dataset, DatasetBundle
from medbench.api.toolkit import UsageError
from medbench_data._common import TensorSplit, fingerprint

SPLITS = ("train", "val", "test")
LAYOUT = (
    "a MedMNIST .npz file (e.g. pneumoniamnist.npz or pneumoniamnist_64.npz) with the arrays "
    "train_images, train_labels, val_images, val_labels, test_images, test_labels"
)
MULTILABEL_SUBSETS = frozenset({"chestmnist"})

_ORGAN = (
    "bladder",
    "femur-left",
    "femur-right",
    "heart",
    "kidney-left",
    "kidney-right",
    "liver",
    "lung-left",
    "lung-right",
    "pancreas",
    "spleen",
)
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "pathmnist": (
        "adipose",
        "background",
        "debris",
        "lymphocytes",
        "mucus",
        "smooth muscle",
        "normal colon mucosa",
        "cancer-associated stroma",
        "colorectal adenocarcinoma epithelium",
    ),
    "chestmnist": (
        "atelectasis",
        "cardiomegaly",
        "effusion",
        "infiltration",
        "mass",
        "nodule",
        "pneumonia",
        "pneumothorax",
        "consolidation",
        "edema",
        "emphysema",
        "fibrosis",
        "pleural",
        "hernia",
    ),
    "dermamnist": (
        "actinic keratoses and intraepithelial carcinoma",
        "basal cell carcinoma",
        "benign keratosis-like lesions",
        "dermatofibroma",
        "melanoma",
        "melanocytic nevi",
        "vascular lesions",
    ),
    "octmnist": ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"),
    "pneumoniamnist": ("normal", "pneumonia"),
    "retinamnist": ("grade 0", "grade 1", "grade 2", "grade 3", "grade 4"),
    "breastmnist": ("malignant", "normal, benign"),
    "bloodmnist": (
        "basophil",
        "eosinophil",
        "erythroblast",
        "immature granulocytes",
        "lymphocyte",
        "monocyte",
        "neutrophil",
        "platelet",
    ),
    "tissuemnist": (
        "collecting duct, connecting tubule",
        "distal convoluted tubule",
        "glomerular endothelial cells",
        "interstitial endothelial cells",
        "leukocytes",
        "podocytes",
        "proximal tubule segments",
        "thick ascending limb",
    ),
    "organamnist": _ORGAN,
    "organcmnist": _ORGAN,
    "organsmnist": _ORGAN,
}


def _luma(images: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of (N, H, W, 3) uint8 images, as float32 in [0, 255]."""
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return images.astype(np.float32) @ weights


class MedMNIST(Dataset):
    """A MedMNIST 2D subset from its ``.npz`` file, with the file's own train/val/test splits.

    ``--data-dir`` is the ``.npz`` file itself or a folder holding ``<subset>.npz`` (or
    ``<subset>_<size>.npz`` for MedMNIST+). RGB subsets become grayscale (ITU-R 601 luma)
    unless ``grayscale`` is false. ``chestmnist`` is multi-label: its labels are float
    multi-hot vectors of 14 findings and the bundle has ``multilabel=True``; the other
    subsets are single-label with ``int64`` class indices. Class names come from the
    MedMNIST v2 metadata for the known subsets, ``class_<i>`` otherwise.
    """

    name = "medmnist"
    description = "A local MedMNIST .npz file (any 2D subset), its own splits, read offline (--data-dir)"
    task = "classification"
    needs_data_dir = True
    layout = LAYOUT

    @dataclass(frozen=True)
    class Settings:
        """Settings of ``medmnist``.

        Attributes:
            subset: Which file to look for when ``--data-dir`` is a folder, and which class
                names to use (``pneumoniamnist``, ``chestmnist``, ``bloodmnist``...).
            size: MedMNIST+ size suffix to look for (28 means the plain ``<subset>.npz``).
            image_size: Resize to this side (0 keeps the file's size).
            grayscale: Convert RGB subsets to one channel.
        """

        subset: str = "pneumoniamnist"
        size: int = 28
        image_size: int = 0
        grayscale: bool = True

        def validate(self) -> None:
            if self.image_size != 0 and not 8 <= self.image_size <= 1024:
                raise ValueError("image_size must be 0 (keep) or in [8, 1024]")

    def _resolve(self, data_dir: Path) -> Path:
        if data_dir.is_file():
            return data_dir
        settings = self.settings
        names = [f"{settings.subset}.npz"] if settings.size == 28 else []
        names += [f"{settings.subset}_{settings.size}.npz"]
        for name in names:
            if (data_dir / name).is_file():
                return data_dir / name
        raise UsageError(f"medmnist: {' or '.join(names)} not found in {data_dir}; expected {LAYOUT}")

    def _read(self, path: Path) -> dict[str, np.ndarray]:
        try:
            with np.load(path, allow_pickle=False) as archive:
                missing = [
                    f"{s}_{k}" for s in SPLITS for k in ("images", "labels") if f"{s}_{k}" not in archive
                ]
                if missing:
                    raise UsageError(f"medmnist: {path} lacks {', '.join(missing)}; expected {LAYOUT}")
                return {key: archive[key] for key in archive.files}
        except (OSError, ValueError, zipfile.BadZipFile) as error:
            raise UsageError(f"medmnist: cannot read {path}: {error}") from None

    def load(self, data_dir: Path | None, seed: int) -> DatasetBundle:
        if data_dir is None:
            raise UsageError(f"medmnist needs --data-dir; expected {LAYOUT}")
        settings = self.settings
        path = self._resolve(data_dir)
        arrays = self._read(path)
        subset = path.stem.split("_")[0].lower()
        multilabel = subset in MULTILABEL_SUBSETS or (
            arrays["train_labels"].ndim == 2 and (arrays["train_labels"].shape[1] > 1)
        )
        splits = {}
        for split in SPLITS:
            images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
            if len(images) != len(labels):
                raise UsageError(
                    f"medmnist: {path}: {split} has {len(images)} images but {len(labels)} labels"
                )
            splits[split] = (self._images(images, path), self._labels(labels, multilabel))
        if multilabel:
            num_classes = splits["train"][1].shape[1]
        else:
            num_classes = int(max(int(labels.max()) for _, labels in splits.values() if len(labels)) + 1)
        names = CLASS_NAMES.get(subset)
        if names is None or len(names) != num_classes:
            names = tuple(f"class_{i}" for i in range(num_classes))
        train_x = splits["train"][0]
        return DatasetBundle(
            train=TensorSplit(*splits["train"]),
            val=TensorSplit(*splits["val"]),
            test=TensorSplit(*splits["test"]),
            class_names=names,
            input_shape=tuple(train_x.shape[1:]),
            modality=subset,
            multilabel=multilabel,
            fingerprint=fingerprint(
                self.name, settings, [t for pair in splits.values() for t in pair], {"file": path.name}
            ),
        )

    def _images(self, images: np.ndarray, path: Path) -> torch.Tensor:
        if images.ndim == 4 and images.shape[-1] == 3:
            if self.settings.grayscale:
                tensor = torch.from_numpy(_luma(images) / 255.0).unsqueeze(1)
            else:
                tensor = torch.from_numpy(images.astype(np.float32) / 255.0).permute(0, 3, 1, 2)
        elif images.ndim == 3:
            tensor = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
        else:
            raise UsageError(f"medmnist: {path}: images of shape {images.shape} are not (N,H,W) or (N,H,W,3)")
        size = self.settings.image_size
        if size and tuple(tensor.shape[-2:]) != (size, size):
            tensor = F.interpolate(
                tensor, size=(size, size), mode="bilinear", align_corners=False, antialias=True
            ).clamp(0, 1)
        return tensor.contiguous()

    @staticmethod
    def _labels(labels: np.ndarray, multilabel: bool) -> torch.Tensor:
        if multilabel:
            return torch.from_numpy(labels.astype(np.float32).reshape(len(labels), -1))
        return torch.from_numpy(labels.reshape(len(labels), -1)[:, 0].astype(np.int64))
