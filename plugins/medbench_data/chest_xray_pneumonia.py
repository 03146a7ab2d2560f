"""``chest-xray-pneumonia``: Kermany's pediatric chest X-rays (Kaggle layout), normal vs pneumonia."""

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

RELEASE_FOLDERS = ("train", "val", "test")
LAYOUT = (
    "DATA_DIR/chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg (Kermany's Kaggle release; "
    "DATA_DIR may be chest_xray itself or the folder holding it)"
)


class ChestXrayPneumonia(BalancedFolderDataset):
    """Pediatric chest X-rays, binary: ``normal`` (label 0) vs ``pneumonia`` (label 1).

    Reads Kermany et al.'s release in its Kaggle layout ``chest_xray/{train,val,test}/
    {NORMAL,PNEUMONIA}/`` (bacterial and viral pneumonia are both ``pneumonia``). Paper 000
    (Chen & Luo 2024, Table 1) uses 1583 + 1583 images: 1583 is the number of NORMAL images
    of all three release folders together, so the folders are pooled, the larger class is
    downsampled at random (with the seed) to the size of the smaller, and the balanced set is
    re-split 70/15/15 stratified by class. Images are resized and center-cropped to
    224 × 224 grayscale.
    """

    name = "chest-xray-pneumonia"
    description = (
        "Kermany chest X-ray (Kaggle chest_xray), normal vs pneumonia, balanced (paper 000; --data-dir)"
    )
    layout = LAYOUT
    modality = "xray"

    @dataclass(frozen=True)
    class Settings(BalancedFolderSettings):
        """Settings of ``chest-xray-pneumonia``.

        Attributes:
            image_size: Side after resizing the shorter side and center-cropping (8 to 1024).
            channels: 1 (grayscale, as the paper) or 3 (RGB).
            val_fraction: Share of each class in the validation split.
            test_fraction: Share of each class in the test split.
            preload_mb: Decode every image at load time when they take at most this many MiB.
            balance: Downsample the larger class at random to the size of the smaller one.
            release_folders: Which of the release's folders to pool (``train``, ``val``,
                ``test``); the paper pools all three.
        """

        release_folders: tuple[str, ...] = RELEASE_FOLDERS

        def validate(self) -> None:
            """Raise ValueError on an out-of-range setting."""
            super().validate()
            check_release_folders(self.release_folders, RELEASE_FOLDERS)

    def class_sources(self) -> dict[str, list[Source]]:
        folders = canonical_folders(self.settings.release_folders, RELEASE_FOLDERS)
        return {
            "normal": [under(folder, ("NORMAL",)) for folder in folders],
            "pneumonia": [under(folder, ("PNEUMONIA",)) for folder in folders],
        }
