"""``imagefolder``: a local folder with one sub-folder of PNG/JPEG images per class."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from medbench.api import Dataset, DatasetBundle
from medbench.api.toolkit import UsageError
from medbench_data._common import TensorSplit, fingerprint, stratified_split, validate_fractions

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
LAYOUT = "DATA_DIR/<class name>/<image>.png|.jpg|.jpeg, one sub-folder per class (at least two)"


def to_grayscale_array(image: Image.Image) -> np.ndarray:
    """A PIL image as a float32 array in [0, 1], whatever its mode.

    16-bit images (``I;16``, ``I``) are scaled by their type's range, not clipped to 8 bits;
    floating-point images (``F``) are min-max scaled; alpha is dropped (composited on black
    would change intensities, so it is ignored); colour is converted with ITU-R 601 luma, as
    PIL's ``L`` mode does.

    Raises:
        ValueError: When a floating-point image holds NaN or infinite values.
    """
    if image.mode in {"I;16", "I;16B", "I;16L", "I;16N"}:
        return np.asarray(image, dtype=np.float32) / 65535.0
    if image.mode == "I":
        array = np.asarray(image, dtype=np.float32)
        maximum = 65535.0 if array.max() <= 65535 else float(array.max())
        return np.clip(array / maximum, 0.0, 1.0)
    if image.mode == "F":
        array = np.asarray(image, dtype=np.float32)
        if not np.isfinite(array).all():
            raise ValueError("the image holds NaN or infinite pixel values")
        span = float(array.max() - array.min())
        return (array - array.min()) / span if span > 0 else np.zeros_like(array)
    if image.mode in {"RGBA", "LA", "PA"}:
        image = image.convert("RGB" if image.mode == "RGBA" else "L")
    return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def _resize(array: np.ndarray, size: int) -> np.ndarray:
    if array.shape == (size, size):
        return array
    resized = Image.fromarray(array, mode="F").resize((size, size), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def _rgb_array(image: Image.Image, size: int) -> np.ndarray:
    """An image as ``float32`` RGB ``(3, size, size)`` in [0, 1], resized bilinearly."""
    rgb = image.convert("RGB")
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / 255.0


def _identity(settings: Any) -> dict[str, Any]:
    """The settings that define the data; ``channels`` only when not the default (1), so that the
    fingerprints of grayscale folders stay those they had before the setting existed."""
    identity = dataclasses.asdict(settings)
    if identity.get("channels") == 1:
        del identity["channels"]
    return identity


class ImageFolder(Dataset):
    """Images from a local folder, one sub-folder per class (class names sorted).

    Every image is converted to grayscale in [0, 1] (16-bit PNGs keep their precision; or to
    RGB with ``channels: 3``) and
    resized to ``image_size`` × ``image_size``; the split into train / val / test is
    stratified by class and fixed by the seed.
    """

    name = "imagefolder"
    description = "Local folder of PNG/JPEG images, one sub-folder per class (--data-dir)"
    task = "classification"
    needs_data_dir = True
    layout = LAYOUT

    @dataclass(frozen=True)
    class Settings:
        """Settings of ``imagefolder``.

        Attributes:
            image_size: Height and width after resizing (8 to 1024).
            channels: 1 (grayscale, ITU-R 601 luma; 16-bit images keep their precision) or 3
                (RGB, 8 bits per channel; a grey image is repeated over the three), for models
                built for colour input such as ImageNet backbones.
            val_fraction: Share of each class in the validation split.
            test_fraction: Share of each class in the test split.
            max_per_class: Keep at most this many images per class (0: all), chosen by seed.
        """

        image_size: int = 64
        channels: int = 1
        val_fraction: float = 0.15
        test_fraction: float = 0.15
        max_per_class: int = 0

        def validate(self) -> None:
            if not 8 <= self.image_size <= 1024:
                raise ValueError(f"image_size must be in [8, 1024], got {self.image_size}")
            if self.channels not in (1, 3):
                raise ValueError(f"channels must be 1 or 3, got {self.channels}")
            if self.max_per_class < 0:
                raise ValueError("max_per_class must be >= 0")
            validate_fractions(self.val_fraction, self.test_fraction)

    def _class_files(self, root: Path) -> dict[str, list[Path]]:
        if not root.is_dir():
            raise UsageError(f"imagefolder: {root} is not a directory; expected layout: {LAYOUT}")
        classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not classes:
            raise UsageError(f"imagefolder: no class sub-folders in {root}; expected layout: {LAYOUT}")
        files = {}
        for folder in classes:
            images = sorted(
                p
                for p in folder.iterdir()
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
            )
            if not images:
                raise UsageError(f"imagefolder: class folder {folder} has no PNG/JPEG images")
            files[folder.name] = images
        if len(files) < 2:
            raise UsageError(f"imagefolder: {root} has only one class folder; expected layout: {LAYOUT}")
        return files

    def load(self, data_dir: Path | None, seed: int) -> DatasetBundle:
        if data_dir is None:
            raise UsageError(f"imagefolder needs --data-dir; expected layout: {LAYOUT}")
        settings = self.settings
        files = self._class_files(data_dir)
        rng = np.random.default_rng([seed, 0xF01DE2])
        paths: list[Path] = []
        labels: list[int] = []
        for index, (_, images) in enumerate(files.items()):
            if settings.max_per_class and len(images) > settings.max_per_class:
                chosen = sorted(rng.choice(len(images), settings.max_per_class, replace=False))
                images = [images[i] for i in chosen]
            paths.extend(images)
            labels.extend([index] * len(images))
        size, channels = settings.image_size, settings.channels
        arrays = np.empty((len(paths), channels, size, size), dtype=np.float32)
        for position, path in enumerate(paths):
            try:
                with Image.open(path) as image:
                    image.load()
                    if channels == 1:
                        arrays[position, 0] = _resize(to_grayscale_array(image), size)
                    else:
                        arrays[position] = _rgb_array(image, size)
            except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
                raise UsageError(f"imagefolder: cannot decode image {path}: {error}") from None
        label_array = np.asarray(labels, dtype=np.int64)
        train, val, test = stratified_split(label_array, settings.val_fraction, settings.test_fraction, seed)
        images_t = torch.from_numpy(arrays)
        labels_t = torch.from_numpy(label_array)
        relative = [str(p.relative_to(data_dir)) for p in paths]
        return DatasetBundle(
            train=TensorSplit(images_t[train], labels_t[train]),
            val=TensorSplit(images_t[val], labels_t[val]),
            test=TensorSplit(images_t[test], labels_t[test]),
            class_names=tuple(files),
            input_shape=(channels, size, size),
            modality="image",
            fingerprint=fingerprint(
                self.name, _identity(settings), [arrays, label_array], {"files": relative, "seed": seed}
            ),
        )
