"""Built-in datasets: synthetic phantoms, image folders, MedMNIST and NIfTI files.

* ``phantom2d``: CT-like synthetic cross-sections with or without a lesion, generated
  from the seed (no files needed).
* ``imagefolder``: a local folder with one sub-folder of PNG/JPEG images per class.
* ``medmnist``: a local MedMNIST ``.npz`` file, with its own train/val/test splits.
* ``phantom3d``: CT-like synthetic abdominal volumes with organ labels for 3D
  segmentation, generated from the seed (no files needed).
* ``nifti``: local NIfTI image/label volumes listed in a Decathlon/BTCV-style JSON split
  file, preprocessed with MONAI as the reference BTCV loader does (3D segmentation).
* The papers' datasets, read from a local copy in the layout of their public release:
  ``brain-tumor-mri``, ``chest-xray-pneumonia``, ``iq-oth-nccd``, ``busi`` (paper 000) and
  ``isic2018-skin4``, ``rsna-pneumonia`` (paper 001), ``chexpert``, ``chestxray14``,
  ``mura-shoulder`` (paper 002); and ``dicom``, class folders of DICOM files; see
  docs/datasets.md.

Registered through the ``medbench`` entry-point group like any third-party plugin.
"""

from __future__ import annotations

from collections.abc import Callable

from medbench import hookimpl
from medbench.api import Dataset
from medbench_data.brain_tumor_mri import BrainTumorMRI
from medbench_data.busi import BUSI
from medbench_data.chest_xray_pneumonia import ChestXrayPneumonia
from medbench_data.chestxray14 import ChestXray14
from medbench_data.chexpert import CheXpert
from medbench_data.dicomfolder import DicomFolder
from medbench_data.imagefolder import ImageFolder
from medbench_data.iq_oth_nccd import IQOTHNCCD
from medbench_data.isic2018_skin4 import ISIC2018Skin4
from medbench_data.medmnist import MedMNIST
from medbench_data.mura import MURAShoulder
from medbench_data.nifti import Nifti
from medbench_data.phantom2d import Phantom2D
from medbench_data.phantom3d import Phantom3D
from medbench_data.rsna_pneumonia import RSNAPneumonia

__all__ = [
    "BUSI",
    "IQOTHNCCD",
    "BrainTumorMRI",
    "CheXpert",
    "ChestXray14",
    "ChestXrayPneumonia",
    "DicomFolder",
    "ISIC2018Skin4",
    "ImageFolder",
    "MURAShoulder",
    "MedMNIST",
    "Nifti",
    "Phantom2D",
    "Phantom3D",
    "RSNAPneumonia",
    "register_datasets",
]


@hookimpl
def register_datasets(register: Callable[[Dataset], None]) -> None:
    """Register the synthetic, generic-folder and the papers' release-layout datasets."""
    register(Phantom2D())
    register(ImageFolder())
    register(MedMNIST())
    register(Phantom3D())
    register(Nifti())
    # paper 000
    register(BrainTumorMRI())
    register(ChestXrayPneumonia())
    register(IQOTHNCCD())
    register(BUSI())
    # paper 001
    register(ISIC2018Skin4())
    register(RSNAPneumonia())
    # paper 002
    register(CheXpert())
    register(ChestXray14())
    register(MURAShoulder())
    # raw DICOM
    register(DicomFolder())
