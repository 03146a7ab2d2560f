"""Built-in datasets: synthetic phantoms, image folders and MedMNIST files.

* ``phantom2d``: CT-like synthetic cross-sections with or without a lesion, generated
  from the seed (no files needed).
* ``imagefolder``: a local folder with one sub-folder of PNG/JPEG images per class.
* ``medmnist``: a local MedMNIST ``.npz`` file, with its own train/val/test splits.

Registered through the ``medbench`` entry-point group like any third-party plugin.
"""

from __future__ import annotations

from collections.abc import Callable

from medbench import hookimpl
from medbench.api import Dataset
from medbench_data.imagefolder import ImageFolder
from medbench_data.medmnist import MedMNIST
from medbench_data.phantom2d import Phantom2D

__all__ = ["ImageFolder", "MedMNIST", "Phantom2D", "register_datasets"]


@hookimpl
def register_datasets(register: Callable[[Dataset], None]) -> None:
    """Register ``phantom2d``, ``imagefolder`` and ``medmnist``."""
    register(Phantom2D())
    register(ImageFolder())
    register(MedMNIST())
