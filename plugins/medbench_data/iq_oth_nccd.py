"""``iq-oth-nccd``: the IQ-OTH/NCCD lung cancer CT slices, no cancer vs cancer (paper 000)."""

from __future__ import annotations

from medbench_data._folders import BalancedFolderDataset, Source

BENIGN: Source = ("Bengin cases", "Benign cases", "Bengin", "Benign")
MALIGNANT: Source = ("Malignant cases", "Malignant")
NORMAL: Source = ("Normal cases", "Normal")
LAYOUT = (
    "DATA_DIR/{Bengin cases,Malignant cases,Normal cases}/*.jpg (the IQ-OTH/NCCD release, "
    "'Bengin' as it is spelled there, 'Benign' accepted; DATA_DIR may also be a folder above it)"
)


class IQOTHNCCD(BalancedFolderDataset):
    """Chest CT slices of the IQ-OTH/NCCD lung cancer dataset, binary: ``no-cancer`` vs ``cancer``.

    Reads the release's three folders ``Bengin cases/`` (the release's spelling; ``Benign
    cases/`` is accepted too), ``Malignant cases/`` and ``Normal cases/``. As in paper 000
    (Chen & Luo 2024, Table 1: "no-cancer (normal and benign), cancer", 536 + 536) normal
    and benign cases form ``no-cancer`` (label 0) and malignant cases ``cancer`` (label 1);
    the larger class is downsampled at random (with the seed) to the size of the smaller,
    images are resized and center-cropped to 224 × 224 grayscale, and the balanced set is
    split 70/15/15 stratified by class (the release has no split of its own).
    """

    name = "iq-oth-nccd"
    description = (
        "IQ-OTH/NCCD lung cancer CT, no-cancer (normal+benign) vs cancer, balanced (paper 000; --data-dir)"
    )
    layout = LAYOUT
    modality = "ct"

    def class_sources(self) -> dict[str, list[Source]]:
        return {"no-cancer": [NORMAL, BENIGN], "cancer": [MALIGNANT]}
