"""``busi``: the Breast Ultrasound Images dataset (BUSI), no cancer vs cancer (paper 000)."""

from __future__ import annotations

from pathlib import Path

from medbench_data._folders import BalancedFolderDataset, Source

LAYOUT = (
    "DATA_DIR/Dataset_BUSI_with_GT/{benign,malignant,normal}/<name> (<n>).png with the masks "
    "'<name> (<n>)_mask*.png' beside them (masks are skipped; DATA_DIR may also be "
    "Dataset_BUSI_with_GT itself)"
)


class BUSI(BalancedFolderDataset):
    """Breast ultrasound images (Al-Dhabyani et al. 2020), binary: ``no-cancer`` vs ``cancer``.

    Reads the release ``Dataset_BUSI_with_GT/{benign,malignant,normal}/``, leaving out the
    segmentation masks stored beside the images (``benign (4)_mask.png``,
    ``benign (4)_mask_1.png``). As in paper 000 (Chen & Luo 2024, Table 1: "no-cancer
    (normal and benign), cancer", 210 + 210) normal and benign images form ``no-cancer``
    (label 0) and malignant ones ``cancer`` (label 1); the larger class is downsampled at
    random (with the seed) to the size of the smaller, images are resized and center-cropped
    to 224 × 224 grayscale, and the balanced set is split 70/15/15 stratified by class (the
    release has no split of its own).
    """

    name = "busi"
    description = (
        "Breast ultrasound (BUSI), no-cancer (normal+benign) vs cancer, masks skipped, balanced (paper 000)"
    )
    layout = LAYOUT
    modality = "ultrasound"

    def class_sources(self) -> dict[str, list[Source]]:
        return {"no-cancer": [("normal",), ("benign",)], "cancer": [("malignant",)]}

    def excluded(self, path: Path) -> bool:
        """Segmentation masks (``*_mask.png``, ``*_mask_<n>.png``) are not samples."""
        return "_mask" in path.stem.lower()
