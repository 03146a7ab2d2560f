"""Reading and decoding the images of the release-folder datasets (see :mod:`medbench_data._folders`).

Every image is resized (shorter side) and center-cropped to ``image_size``, as torchvision's
``Resize(size)`` + ``CenterCrop(size)`` do on PIL images, in grayscale or RGB, quantised to
8 bits like ``ToTensor`` on a PIL image. A file that cannot be read or decoded is a one-line
:class:`~medbench.api.toolkit.UsageError` naming it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset as TorchDataset

from medbench.api.toolkit import UsageError
from medbench_data.imagefolder import to_grayscale_array

_HIGH_DEPTH_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to ``size`` (bilinear, antialiased) and crop the centre square.

    The same geometry as torchvision's ``Resize(size)`` followed by ``CenterCrop(size)`` on a
    PIL image: the longer side becomes ``int(size * long / short)``, the crop offset is
    ``round((side - size) / 2)``.
    """
    width, height = image.size
    new_size = (size, int(size * height / width)) if width <= height else (int(size * width / height), size)
    if new_size != image.size:
        image = image.resize(new_size, Image.Resampling.BILINEAR)
    left = round((new_size[0] - size) / 2.0)
    top = round((new_size[1] - size) / 2.0)
    return image.crop((left, top, left + size, top + size))


def preprocess(image: Image.Image, size: int, channels: int) -> np.ndarray:
    """A decoded image as ``uint8`` ``(channels, size, size)``: grey or RGB, resized and cropped.

    Grayscale follows :func:`~medbench_data.imagefolder.to_grayscale_array` (ITU-R 601 luma,
    alpha ignored, 16-bit scaled by its range) before quantising to 8 bits; RGB drops alpha,
    and a 16-bit or float grey image is repeated over the three channels.
    """
    if channels == 3 and image.mode not in _HIGH_DEPTH_MODES:
        pil = image.convert("RGB")
    else:
        grey = to_grayscale_array(image)
        pil = Image.fromarray(np.clip(np.rint(grey * 255.0), 0, 255).astype(np.uint8), mode="L")
    array = np.asarray(resize_center_crop(pil, size), dtype=np.uint8)
    array = np.repeat(array[None], channels, axis=0) if array.ndim == 2 else array.transpose(2, 0, 1)
    return np.ascontiguousarray(array)


def decode(data: bytes, path: Path, size: int, channels: int, owner: str) -> np.ndarray:
    """Decode an image file's bytes and :func:`preprocess` it.

    Raises:
        UsageError: Naming ``path`` when the bytes are not a readable image.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return preprocess(image, size, channels)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise UsageError(f"{owner}: cannot decode image {path}: {error}") from None


def check_image_header(data: bytes, path: Path, owner: str) -> None:
    """Check that an image file's bytes open as a non-empty image, without decoding the pixels.

    Args:
        data: The file's content.
        path: The file, for the message.
        owner: The dataset's name, for the message.

    Raises:
        UsageError: Naming ``path`` when the bytes are not a readable image or the image is empty.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            if min(image.size) < 1:
                raise ValueError("empty image")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise UsageError(f"{owner}: cannot decode image {path}: {error}") from None


def read_image_bytes(path: Path, owner: str) -> bytes:
    """The content of an image file.

    Args:
        path: The file.
        owner: The dataset's name, for the message.

    Raises:
        UsageError: Naming ``path`` when it cannot be read.
    """
    try:
        return path.read_bytes()
    except OSError as error:
        raise UsageError(f"{owner}: cannot read image {path}: {error}") from None


class ImageFileSplit(TorchDataset[tuple[torch.Tensor, torch.Tensor]]):
    """One split read lazily: each item decodes and preprocesses its file on access.

    Items are the same as those of a preloaded :class:`~medbench_data._common.TensorSplit`
    (``float32`` in [0, 1], ``(channels, size, size)``), bit for bit.

    Attributes:
        paths: The image file of every item.
        labels: ``(N,)`` ``int64`` class indices.
    """

    def __init__(
        self, paths: Sequence[Path], labels: torch.Tensor, size: int, channels: int, owner: str
    ) -> None:
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        self.paths = list(paths)
        self.labels = labels
        self.size = size
        self.channels = channels
        self.owner = owner

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        path = self.paths[index]
        array = decode(read_image_bytes(path, self.owner), path, self.size, self.channels, self.owner)
        return torch.from_numpy(array).float().div_(255.0), self.labels[index]
