"""``nifti``: local image/label NIfTI pairs listed in a Decathlon-style JSON split file.

Reads the layout of the Medical Segmentation Decathlon, of the Synapse (BTCV) multi-organ
set and of ACDC as they are usually distributed for MONAI: a JSON file in ``DATA_DIR``
lists the ``training`` and ``validation`` pairs (and optionally ``test``), with paths
relative to ``DATA_DIR``, and names the classes under ``labels``::

    {"labels": {"0": "background", "1": "spleen", ...},
     "training": [{"image": "imagesTr/img0005.nii.gz", "label": "labelsTr/label0005.nii.gz"}, ...],
     "validation": [{"image": "imagesTr/img0001.nii.gz", "label": "labelsTr/label0001.nii.gz"}, ...]}

Preprocessing follows the reference BTCV loader of VAFA (MONAI dictionary transforms):
load, channel first, RAS orientation, resampling to ``spacing`` (bilinear for images,
nearest for labels), an intensity window (CT) or per-volume min-max scaling (MRI) to
[0, 1], a crop to the foreground (voxels above 0 after scaling) and optionally a pad or
crop to a fixed size. MONAI delivers ``(C, X, Y, Z)``; the items here put the axial axis
first, ``(C, Z, X, Y)`` for images and ``(Z, X, Y)`` for labels, like every 3D dataset of
medbench. Training items are random ``patch``-sized crops, half of them centred on a
labelled voxel (MONAI's ``RandCropByPosNegLabeld``, pos=1, neg=1); validation and test
items are whole volumes. Preprocessed volumes are kept in memory after their first use.

The split file is parsed and checked by :mod:`medbench_data._nifti_split`.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePath
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from medbench.api import Dataset, DatasetBundle
from medbench.api.toolkit import UsageError
from medbench_data._common import fingerprint
from medbench_data._nifti_split import (
    LAYOUT,
    class_names_of,
    file_identity,
    has_labelled_test,
    read_split_file,
    split_pairs,
)

_ORIENTATION_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))
"""nibabel's RAS convention, passed explicitly to silence MONAI's warning about its changing default."""


class Nifti(Dataset):
    """3D segmentation volumes from local NIfTI image/label pairs and a JSON split file.

    Splits: ``train`` = ``training`` (random crops), ``val`` = ``validation``, ``test`` =
    ``test`` when the split file lists labelled test pairs, else ``validation`` again (the
    BTCV split files list unlabelled test images, which are ignored). Every listed file must
    exist and stay inside ``DATA_DIR``; the first volume of each split is preprocessed and
    checked when the dataset loads, the others when they are first used.
    """

    name = "nifti"
    description = "Local NIfTI image/label volumes with a Decathlon/BTCV JSON split file (--data-dir)"
    task = "segmentation"
    dims = 3
    needs_data_dir = True
    layout = LAYOUT

    @dataclass(frozen=True)
    class Settings:
        """Settings of ``nifti``.

        Attributes:
            split_file: The JSON split file, relative to ``DATA_DIR``.
            spacing: Voxel size in mm after resampling, along the RAS axes (x, y, z).
            intensity: ``window`` maps ``[a_min, a_max]`` linearly to [0, 1] and clips (CT
                Hounsfield units); ``minmax`` scales each volume's own range to [0, 1] (MRI).
            a_min: Lower end of the window (``window`` only).
            a_max: Upper end of the window (``window`` only).
            spatial_size: Pad or crop every preprocessed volume to this cube (voxels) after
                the foreground crop, as the reference ACDC loader does; None keeps each
                volume's own size. It fixes ``input_shape`` (the validation and test items);
                training crops keep the ``patch`` size, so set both alike (as the reference
                does) for one shape everywhere.
            patch: Edge of the cubic training crops, in voxels.
            samples_per_volume: Training crops per volume (the train split has
                ``volumes * samples_per_volume`` items).
            augment: Flip training crops along each axis with probability 0.2.
            class_names: Class names, background first; overrides the split file's ``labels``.
        """

        split_file: str = "dataset.json"
        spacing: tuple[float, float, float] = (1.5, 1.5, 2.0)
        intensity: Literal["window", "minmax"] = "window"
        a_min: float = -175.0
        a_max: float = 250.0
        spatial_size: int | None = None
        patch: int = 96
        samples_per_volume: int = 4
        augment: bool = True
        class_names: tuple[str, ...] = ()

        def validate(self) -> None:
            """Raise ValueError on a value out of range."""
            split = PurePath(self.split_file)
            if not self.split_file or split.is_absolute() or ".." in split.parts:
                raise ValueError(f"split_file must be a path inside DATA_DIR, got {self.split_file!r}")
            if len(self.spacing) != 3 or not all(s > 0 for s in self.spacing):
                raise ValueError(f"spacing must be three positive sizes in mm, got {self.spacing}")
            if self.intensity not in ("window", "minmax"):
                raise ValueError(f"intensity must be 'window' or 'minmax', got {self.intensity!r}")
            if self.a_min >= self.a_max:
                raise ValueError(f"a_min must be below a_max, got {self.a_min} and {self.a_max}")
            if self.spatial_size is not None and self.spatial_size < 1:
                raise ValueError(f"spatial_size must be positive or None, got {self.spatial_size}")
            if self.patch < 1:
                raise ValueError(f"patch must be positive, got {self.patch}")
            if self.samples_per_volume < 1:
                raise ValueError(f"samples_per_volume must be at least 1, got {self.samples_per_volume}")
            if self.class_names and len(self.class_names) < 2:
                raise ValueError("class_names needs at least two names, background first")
            if len(set(self.class_names)) != len(self.class_names):
                raise ValueError(f"class_names must be unique, got {self.class_names}")

    def load(self, data_dir: Path | None, seed: int) -> DatasetBundle:
        """Read the split file, check the listed files and the first volume of each split.

        Raises:
            UsageError: On a missing or malformed folder, split file or volume; the message
                names the path and the expected layout.
        """
        settings: Nifti.Settings = self.settings
        try:
            settings.validate()
        except ValueError as error:
            raise UsageError(f"dataset {self.name!r}: {error}") from None
        if data_dir is None:
            raise UsageError(f"nifti needs --data-dir; expected layout: {LAYOUT}")
        if not data_dir.is_dir():
            raise UsageError(f"nifti: {data_dir} is not a directory; expected layout: {LAYOUT}")
        split_path = data_dir / settings.split_file
        content, spec = read_split_file(split_path)
        lists = {key: split_pairs(spec, key, data_dir, split_path) for key in ("training", "validation")}
        test_key = "test" if has_labelled_test(spec, split_path) else "validation"
        if test_key == "test":
            lists["test"] = split_pairs(spec, "test", data_dir, split_path)
        class_names = class_names_of(settings.class_names, spec, split_path)

        store = VolumeStore(settings, len(class_names))
        volumes = {key: [store.add(pair) for pair in pairs] for key, pairs in lists.items()}
        for key in lists:
            store.get(volumes[key][0])  # surface bad data now rather than mid-training

        train = TrainCrops(store, volumes["training"], settings, seed)
        val = Volumes(store, volumes["validation"])
        test = val if test_key == "validation" else Volumes(store, volumes["test"])
        size = settings.spatial_size
        files = sorted({path for pairs in lists.values() for pair in pairs for path in pair})
        digest = fingerprint(
            self.name,
            settings,
            [],
            {
                "seed": seed,
                "split_file": hashlib.sha256(content).hexdigest(),
                "files": [file_identity(path, data_dir) for path in files],
                "class_names": list(class_names),
                "monai": _monai_version(),
            },
        )
        return DatasetBundle(
            train=train,
            val=val,
            test=test,
            class_names=class_names,
            input_shape=(1, -1, -1, -1) if size is None else (1, size, size, size),
            task="segmentation",
            modality="ct" if settings.intensity == "window" else "mri",
            fingerprint=digest,
            intensity_window=(settings.a_min, settings.a_max) if settings.intensity == "window" else None,
            intensity_unit="HU" if settings.intensity == "window" else "",
        )


def _monai_version() -> str:
    import monai

    return ".".join(monai.__version__.split(".")[:2])


# --------------------------------------------------------------------------- volumes


class VolumeStore:
    """Preprocesses image/label pairs on first use and keeps the results in memory.

    Volumes are stored depth first: images ``float32`` ``(1, Z, X, Y)`` in [0, 1], labels
    ``(1, Z, X, Y)`` in the smallest integer type that holds the classes.
    """

    def __init__(self, settings: Nifti.Settings, num_classes: int) -> None:
        self.settings = settings
        self.num_classes = num_classes
        self.pairs: list[tuple[Path, Path]] = []
        self._keys: dict[tuple[Path, Path], int] = {}
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._transform: Any = None

    def add(self, pair: tuple[Path, Path]) -> int:
        """Register a pair (once, whatever the number of splits listing it); return its key."""
        if pair not in self._keys:
            self._keys[pair] = len(self.pairs)
            self.pairs.append(pair)
        return self._keys[pair]

    def get(self, key: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The preprocessed ``(image, label)`` of pair ``key``.

        Raises:
            UsageError: When a file cannot be read or its content does not fit the contract.
        """
        if key not in self._cache:
            self._cache[key] = self._preprocess(*self.pairs[key])
        return self._cache[key]

    def _preprocess(self, image_path: Path, label_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
        image = _read(image_path, "image")
        label = _read(label_path, "label")
        if not bool(torch.isfinite(_plain(image)).all()):
            raise UsageError(f"nifti: image {image_path} holds NaN or infinite values")
        if tuple(image.shape[1:]) != tuple(label.shape[1:]):
            raise UsageError(
                f"nifti: label {label_path} has shape {tuple(label.shape[1:])} but its image {image_path} "
                f"has {tuple(image.shape[1:])}"
            )
        if self._transform is None:
            self._transform = _pipeline(self.settings)
        data = self._transform({"image": image, "label": label})
        image_t, label_t = _plain(data["image"]), _plain(data["label"])
        if label_t.numel() == 0:
            hint = "check the a_min/a_max window" if self.settings.intensity == "window" else "it is constant"
            raise UsageError(
                f"nifti: image {image_path} is all background (0) after intensity scaling; {hint}"
            )
        rounded = label_t.round()
        if not torch.equal(rounded, label_t):
            raise UsageError(
                f"nifti: label {label_path} holds non-integer values; labels must be class indices"
            )
        low, high = int(rounded.min()), int(rounded.max())
        if low < 0 or high >= self.num_classes:
            raise UsageError(
                f"nifti: label {label_path} has values {low}..{high} but there are {self.num_classes} "
                f"classes (0..{self.num_classes - 1}); fix the labels or the class names"
            )
        dtype = torch.uint8 if self.num_classes <= 256 else torch.int32
        # (C, X, Y, Z) -> (C, Z, X, Y): axial slices first
        return (
            image_t.float().permute(0, 3, 1, 2).contiguous(),
            rounded.to(dtype).permute(0, 3, 1, 2).contiguous(),
        )


@lru_cache(maxsize=1)
def _loader() -> Any:
    """MONAI's NIfTI loader, built once: each construction probes every reader and warns
    about the missing nvImageCodec DICOM plugin, which a NIfTI loader never uses."""
    from monai.transforms import LoadImage

    logger = logging.getLogger("monai.data.nvimgcodec_pydicom_plugin")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader")
            return LoadImage(reader="NibabelReader", image_only=True)
    finally:
        logger.setLevel(level)


def _read(path: Path, what: str) -> Any:
    """Load a NIfTI file channel first (a MetaTensor with its affine); check it is one 3-D volume."""
    from monai.transforms import EnsureChannelFirst

    try:
        volume = EnsureChannelFirst()(_loader()(str(path)))
    except Exception as error:  # nibabel and MONAI raise many types, wrapped in RuntimeError
        raise UsageError(f"nifti: cannot read {what} {path}: {_root_cause(error)}") from None
    if volume.ndim != 4 or volume.shape[0] != 1:
        shape = tuple(volume.shape[1:]) if volume.ndim else ()
        raise UsageError(
            f"nifti: {what} {path} must be a single 3-D volume, "
            f"got {volume.shape[0]} channel(s) of shape {shape}"
        )
    return volume


def _root_cause(error: BaseException) -> str:
    while error.__cause__ is not None:
        error = error.__cause__
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def _pipeline(settings: Nifti.Settings) -> Any:
    """MONAI's preprocessing of a loaded pair, as the reference BTCV (and ACDC) loaders do it."""
    from monai.transforms import (
        Compose,
        CropForegroundd,
        Orientationd,
        ResizeWithPadOrCropd,
        ScaleIntensityd,
        ScaleIntensityRanged,
        Spacingd,
    )

    keys = ["image", "label"]
    intensity = (
        ScaleIntensityRanged(
            keys="image", a_min=settings.a_min, a_max=settings.a_max, b_min=0.0, b_max=1.0, clip=True
        )
        if settings.intensity == "window"
        else ScaleIntensityd(keys="image", minv=0.0, maxv=1.0)
    )
    transforms: list[Any] = [
        Orientationd(keys=keys, axcodes="RAS", labels=_ORIENTATION_LABELS),
        Spacingd(keys=keys, pixdim=settings.spacing, mode=("bilinear", "nearest")),
        intensity,
        CropForegroundd(keys=keys, source_key="image"),
    ]
    if settings.spatial_size is not None:
        transforms.append(ResizeWithPadOrCropd(keys=keys, spatial_size=settings.spatial_size))
    return Compose(transforms)


def _plain(tensor: Any) -> torch.Tensor:
    """A plain tensor without MONAI's metadata."""
    return tensor.as_tensor() if hasattr(tensor, "as_tensor") else torch.as_tensor(tensor)


def _item_seed(seed: int, index: int, purpose: int) -> int:
    return int(np.random.SeedSequence([seed, index, purpose]).generate_state(1)[0])


class Volumes(TorchDataset[tuple[torch.Tensor, torch.Tensor]]):
    """Whole preprocessed volumes: ``(1, Z, X, Y)`` float32 images and ``(Z, X, Y)`` int64 labels."""

    def __init__(self, store: VolumeStore, keys: Sequence[int]) -> None:
        self.store = store
        self.keys = list(keys)

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.store.get(self.keys[index])
        return image, label[0].long()


class TrainCrops(TorchDataset[tuple[torch.Tensor, torch.Tensor]]):
    """Random ``patch``-sized crops of the training volumes, ``samples_per_volume`` per volume.

    Item ``i`` is a crop of volume ``i // samples_per_volume`` seeded by ``(seed, i)``, so that
    an index always gives the same crop (and flips). Volumes smaller than the patch are
    zero-padded first. Crops are centred on a labelled voxel or on an unlabelled voxel of the
    body (image above 0) with equal probability, as MONAI's ``RandCropByPosNegLabeld`` with
    ``pos=1, neg=1`` does.
    """

    _CROP, _FLIP = 0xC209, 0xF119

    def __init__(self, store: VolumeStore, keys: Sequence[int], settings: Nifti.Settings, seed: int) -> None:
        self.store = store
        self.keys = list(keys)
        self.settings = settings
        self.seed = seed

    def __len__(self) -> int:
        return len(self.keys) * self.settings.samples_per_volume

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        from monai.transforms import Compose, RandCropByPosNegLabeld, RandFlipd, SpatialPadd

        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} training crops")
        index %= len(self)
        image, label = self.store.get(self.keys[index // self.settings.samples_per_volume])
        keys = ["image", "label"]
        patch = self.settings.patch
        crop = Compose(
            [
                SpatialPadd(keys=keys, spatial_size=patch),
                RandCropByPosNegLabeld(
                    keys=keys,
                    label_key="label",
                    spatial_size=patch,
                    pos=1,
                    neg=1,
                    num_samples=1,
                    image_key="image",
                    image_threshold=0,
                ),
            ]
        )
        crop.set_random_state(seed=_item_seed(self.seed, index, self._CROP))
        data = crop({"image": image, "label": label})[0]
        if self.settings.augment:
            flips = Compose([RandFlipd(keys=keys, prob=0.2, spatial_axis=axis) for axis in range(3)])
            flips.set_random_state(seed=_item_seed(self.seed, index, self._FLIP))
            data = flips(data)
        return _plain(data["image"]).contiguous(), _plain(data["label"])[0].long()
