"""``brain-tumor-mri``: the Kaggle "Brain Tumor MRI Dataset", no tumor vs tumor (paper 000)."""

from __future__ import annotations

from dataclasses import dataclass

from medbench_data._folders import (
    BalancedFolderDataset,
    BalancedFolderSettings,
    Source,
    canonical_folders,
    check_release_folders,
    under,
)

RELEASE_FOLDERS = ("Training", "Testing")
TUMOR_TYPES: tuple[Source, ...] = (
    ("glioma", "glioma_tumor"),
    ("meningioma", "meningioma_tumor"),
    ("pituitary", "pituitary_tumor"),
)
NO_TUMOR: Source = ("notumor", "no_tumor")
LAYOUT = (
    "DATA_DIR/Training/{glioma,meningioma,notumor,pituitary}/*.jpg and "
    "DATA_DIR/Testing/{glioma,meningioma,notumor,pituitary}/*.jpg (the Kaggle release; "
    "DATA_DIR may also be the folder holding them)"
)


class BrainTumorMRI(BalancedFolderDataset):
    """Brain MRI slices, binary: ``no-tumor`` (label 0) vs ``tumor`` (label 1).

    Reads the Kaggle "Brain Tumor MRI Dataset" release as extracted: ``Training/`` and
    ``Testing/``, each with ``glioma/ meningioma/ notumor/ pituitary/``. As in paper 000
    (Chen & Luo 2024, Table 1) glioma, meningioma and pituitary are grouped into ``tumor``,
    the larger class is downsampled at random (with the seed) to the size of the smaller,
    and images are resized and center-cropped to 224 × 224 grayscale. The paper's class
    sizes (1595, 1595) are those of ``Training/`` alone (1595 no-tumor images), so only
    ``Training/`` is read by default; the balanced set is split 70/15/15 stratified by class.
    """

    name = "brain-tumor-mri"
    description = "Kaggle Brain Tumor MRI release, no-tumor vs tumor, balanced (paper 000; --data-dir)"
    layout = LAYOUT
    modality = "mri"

    @dataclass(frozen=True)
    class Settings(BalancedFolderSettings):
        """Settings of ``brain-tumor-mri``.

        Attributes:
            image_size: Side after resizing the shorter side and center-cropping (8 to 1024).
            channels: 1 (grayscale, as the paper) or 3 (RGB).
            val_fraction: Share of each class in the validation split.
            test_fraction: Share of each class in the test split.
            preload_mb: Decode every image at load time when they take at most this many MiB.
            balance: Downsample the larger class at random to the size of the smaller one.
            release_folders: Which of the release's folders to pool: ``Training`` (the paper's
                1595 + 1595 images) and/or ``Testing``.
        """

        release_folders: tuple[str, ...] = ("Training",)

        def validate(self) -> None:
            """Raise ValueError on an out-of-range setting."""
            super().validate()
            check_release_folders(self.release_folders, RELEASE_FOLDERS)

    def class_sources(self) -> dict[str, list[Source]]:
        folders = canonical_folders(self.settings.release_folders, RELEASE_FOLDERS)
        return {
            "no-tumor": [under(folder, NO_TUMOR) for folder in folders],
            "tumor": [under(folder, kind) for folder in folders for kind in TUMOR_TYPES],
        }
