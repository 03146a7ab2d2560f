"""Hostile and broken data files: images, NIfTI and DICOM volumes, CSV and list files.

Every case must be a one-line :class:`~medbench.errors.UsageError` naming the file (or load as
documented), never a raw traceback, NaN in the data, or a file read from outside the data root.
Already covered elsewhere, so not repeated here:

* junk ``.png``/``.jpg`` headers, an empty class folder, 16-bit and RGBA PNGs, two image sizes:
  ``tests/plugins/medbench_data/test_file_datasets.py``, ``tests/harness/test_cli.py::
  test_empty_and_corrupt_image_folders_are_rejected``, ``test_paper000_datasets.py::
  test_empty_class_folder_and_broken_image_are_named``, ``test_isic2018_skin4.py::
  test_skin4_broken_image_is_named``;
* 2D and 4D NIfTI images, bad labels, symlinks out of the folder:
  ``tests/plugins/medbench_data/test_nifti.py``;
* an unreadable DICOM file, unordered or mixed series: ``tests/plugins/medbench_data/test_dicom.py``;
* CheXpert: ``../outside.jpg`` on the first row, a missing column, a bad label value;
  RSNA: an unknown class; ISIC: missing columns, not one-hot; MURA: a study folder that is
  neither ``_positive`` nor ``_negative``: the ``test_*_errors`` tests of those datasets;
* ``ReleasePaths.resolve('/etc/passwd')``: ``test_release_files.py::test_release_paths_bases``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from medbench.api import DatasetBundle
from medbench.cli import main
from medbench.errors import UsageError
from medbench_data._files import files_digest, read_image
from medbench_data._folder_images import decode
from medbench_data.chestxray14 import ChestXray14
from medbench_data.chexpert import OBSERVATIONS, CheXpert
from medbench_data.dicom_io import DicomReader, Window, read_dicom
from medbench_data.dicomfolder import DicomFolder
from medbench_data.imagefolder import ImageFolder
from medbench_data.isic2018_skin4 import ISIC2018Skin4
from medbench_data.mura import MURAShoulder
from medbench_data.nifti import Nifti
from medbench_data.rsna_pneumonia import RSNAPneumonia

pytestmark = [
    pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader:UserWarning"),
    pytest.mark.filterwarnings("ignore:Invalid value for VR DS:UserWarning"),
    pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
]


def _all_items(bundle: DatasetBundle) -> list[tuple[torch.Tensor, torch.Tensor]]:
    splits = (bundle.train, bundle.val, bundle.test)
    return [split[i] for split in splits for i in range(len(split))]  # type: ignore[arg-type]


def _check_items(bundle: DatasetBundle) -> None:
    for image, _ in _all_items(bundle):
        assert image.dtype == torch.float32 and image.shape == bundle.input_shape
        assert torch.isfinite(image).all() and 0.0 <= float(image.min()) <= float(image.max()) <= 1.0


# --------------------------------------------------------------------------- images


def _encode(image: Image.Image, fmt: str = "PNG", **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _grey(width: int = 12, height: int = 10, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8))


def _png_with_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def _float_tiff(values: np.ndarray) -> bytes:
    return _encode(Image.fromarray(values.astype(np.float32), mode="F"), "TIFF")


BROKEN_IMAGES: dict[str, tuple[Callable[[], bytes], str]] = {
    "truncated_png": (lambda: _encode(_grey(64, 64))[:120], "truncated"),
    "truncated_jpeg": (lambda: _encode(_grey(64, 64), "JPEG")[:300], ""),
    "zero_bytes": (lambda: b"", "cannot identify image file"),
    "text": (lambda: b"id,label\n1,2\n", "cannot identify image file"),
    "png_of_width_0": (lambda: _png_with_header(0, 10), ""),
    "png_claiming_100000_squared": (lambda: _png_with_header(100_000, 100_000), ""),
    # 400 million 1-bit pixels in 49 kB: PIL's DecompressionBombError escaped imagefolder's handler
    "decompression_bomb": (
        lambda: _encode(Image.new("1", (20_000, 20_000)), optimize=True),
        "decompression bomb",
    ),
    # a float TIFF saved as .png: NaN or infinity became NaN images, then FAILED cells
    "float_tiff_with_nan": (lambda: _float_tiff(np.where(np.eye(12) > 0, np.nan, 1.0)), "NaN or infinite"),
    "float_tiff_with_inf": (lambda: _float_tiff(np.where(np.eye(12) > 0, np.inf, 1.0)), "NaN or infinite"),
}  # fmt: skip


def _image_folder(root: Path, odd: dict[str, bytes] | None = None, per_class: int = 3) -> Path:
    for label in ("a", "b"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            _grey(12 + index, 10, seed=index).save(root / label / f"{index}.png")
    for name, data in (odd or {}).items():
        (root / "b" / name).write_bytes(data)
    return root


@pytest.mark.parametrize("case", sorted(BROKEN_IMAGES))
def test_a_broken_image_in_imagefolder_is_named(case: str, tmp_path: Path) -> None:
    make, fragment = BROKEN_IMAGES[case]
    root = _image_folder(tmp_path / "data", {"odd.png": make()})
    with pytest.raises(UsageError) as error:
        ImageFolder().configured({"image_size": 8}).load(root, 0)
    message = str(error.value)
    assert message.startswith(f"imagefolder: cannot decode image {root / 'b' / 'odd.png'}: "), message
    assert fragment in message and "\n" not in message


@pytest.mark.parametrize("case", sorted(BROKEN_IMAGES))
def test_a_broken_image_of_a_release_is_named(case: str, tmp_path: Path) -> None:
    """The decoders of the release-folder datasets (``busi``, ``isic2018-skin4``, ...) and of the
    CSV-listed ones (``chexpert``, ``mura-shoulder``, ``chestxray14``)."""
    make, fragment = BROKEN_IMAGES[case]
    path = tmp_path / "odd.png"
    path.write_bytes(make())
    for channels in (1, 3):
        with pytest.raises(UsageError, match=f"^busi: cannot decode image {path}: [^\n]*{fragment}"):
            decode(path.read_bytes(), path, 8, channels, "busi")
    with pytest.raises(UsageError, match=f"^chexpert: cannot decode image {path}: [^\n]*{fragment}"):
        read_image(path, "chexpert")


def _palette_png() -> bytes:
    image = Image.fromarray((np.arange(120).reshape(10, 12) % 7).astype(np.uint8), mode="P")
    image.putpalette([value % 256 for value in range(768)])
    return _encode(image, transparency=0)


UNUSUAL_IMAGES: dict[str, Callable[[], bytes]] = {
    "palette_with_transparency": _palette_png,
    "grey_with_alpha": lambda: _encode(_grey().convert("LA")),
    "one_bit": lambda: _encode(_grey().convert("1")),
    "cmyk_jpeg": lambda: _encode(Image.new("CMYK", (12, 10), (10, 20, 30, 40)), "JPEG"),
    "gif_named_png": lambda: _encode(_grey().convert("P"), "GIF"),
    "signed_32_bit_tiff_named_png": lambda: _encode(
        Image.fromarray(np.full((10, 12), -5, np.int32), mode="I"), "TIFF"
    ),
    "constant_float_tiff": lambda: _float_tiff(np.full((10, 12), 3.0)),
    "one_pixel_high": lambda: _encode(_grey(300, 1)),
    "one_pixel_wide": lambda: _encode(_grey(1, 300)),
    "sixteen_bit_rgb_like_la": lambda: _encode(Image.fromarray(np.full((10, 12), 65535, np.uint16))),
}


def test_unusual_but_valid_images_load_in_range(tmp_path: Path) -> None:
    """Modes and shapes a real folder may hold, mixed in one class folder with other sizes."""
    files = {f"{name}.png": make() for name, make in UNUSUAL_IMAGES.items()}
    root = _image_folder(tmp_path / "data", files)
    bundle = (
        ImageFolder().configured({"image_size": 8, "val_fraction": 0.2, "test_fraction": 0.2}).load(root, 0)
    )
    assert len(_all_items(bundle)) == 6 + len(files)
    _check_items(bundle)
    for name in files:
        path = root / "b" / name
        array = read_image(path, "chexpert")
        assert np.isfinite(array).all() and 0 <= array.min() <= array.max() <= 1, name
        for channels in (1, 3):
            decoded = decode(path.read_bytes(), path, 8, channels, "busi")
            assert decoded.shape == (channels, 8, 8) and decoded.dtype == np.uint8, name


def _run_cli(args: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main(args)
        except SystemExit as done:
            code = done.code
    return (code if isinstance(code, int) else 1), err.getvalue()


def test_a_newline_in_a_broken_file_name_still_gives_one_line(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "data", {"bad\nname.png": b"junk"})
    code, err = _run_cli(
        ["run", "--dataset", "imagefolder", "--data-dir", str(root), "--tracking-uri",
         f"sqlite:///{tmp_path / 'mlflow.db'}"]
    )  # fmt: skip
    assert code == 2 and "cannot decode image" in err
    assert len(err.strip().splitlines()) == 1, err


# --------------------------------------------------------------------------- CSV-listed releases

CHEXPERT = "CheXpert-v1.0-small"


def _chexpert(parent: Path) -> Path:
    """Four patients in train.csv, one image in valid.csv."""
    root = parent / CHEXPERT
    for split, patients in (("train", range(1, 5)), ("valid", range(101, 102))):
        rows = []
        for patient in patients:
            relative = f"{CHEXPERT}/{split}/patient{patient:05d}/study1/view1_frontal.jpg"
            (parent / relative).parent.mkdir(parents=True, exist_ok=True)
            _grey(16, 20, seed=patient).save(parent / relative)
            rows.append([relative, "Frontal", *(["1.0", "0.0", "", "-1.0", "0.0"])])
        with (root / f"{split}.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["Path", "Frontal/Lateral", *OBSERVATIONS])
            writer.writerows(rows)
    return root


def _replace_path(table: Path, row: int, path: str) -> None:
    lines = table.read_text(encoding="utf-8").splitlines()
    fields = next(csv.reader([lines[row]]))
    fields[0] = path
    buffer = io.StringIO()
    csv.writer(buffer).writerow(fields)
    lines[row] = buffer.getvalue().rstrip("\r\n")
    table.write_text("\n".join(lines) + "\n", encoding="utf-8")


ESCAPES = [
    "../../../../etc/passwd",
    f"{CHEXPERT}/train/../../../outside.jpg",
    "/etc/passwd",
    "//server/share/x.jpg",
    "\\\\server\\share\\x.jpg",
    "..\\..\\outside.jpg",
]


@pytest.mark.parametrize("row", [1, 3])
@pytest.mark.parametrize("escape", ESCAPES)
def test_chexpert_paths_escaping_the_data_root_are_refused(tmp_path: Path, escape: str, row: int) -> None:
    """On any row, not only the first one (which decides the base folder)."""
    outside = tmp_path / "outside.jpg"
    _grey().save(outside, format="JPEG")
    root = _chexpert(tmp_path / "data")
    _replace_path(root / "train.csv", row, escape)
    with pytest.raises(
        UsageError, match=r"^chexpert: .*train\.csv lists .*: paths must be relative, without \.\."
    ):
        CheXpert().configured({"image_size": 8, "val_fraction": 0.3}).load(root, 0)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (bytes(range(256)) * 4, "cannot read"),
        (b"Path,Frontal/Lateral\n" + b"x" * 200_000 + b"\n", "lacks the column(s) 'Atelectasis'"),
        (b"Path," + ",".join(OBSERVATIONS).encode() + b'\n"' + b"x" * 200_000 + b"\n", "cannot read"),
        (b"", "lacks the column(s) 'Path'"),
    ],
)
def test_chexpert_garbage_tables(tmp_path: Path, content: bytes, fragment: str) -> None:
    root = _chexpert(tmp_path / "data")
    (root / "valid.csv").write_bytes(content)
    with pytest.raises(UsageError) as error:
        CheXpert().configured({"image_size": 8, "val_fraction": 0.3}).load(root, 0)
    assert str(error.value).startswith("chexpert: ") and fragment in str(error.value)
    assert "valid.csv" in str(error.value) and "\n" not in str(error.value)


def test_chexpert_path_with_a_nul_byte_is_named(tmp_path: Path) -> None:
    """A NUL byte in a listed path made ``stat`` (in ``files_digest``) raise a raw ValueError
    unless the file happened to be the first of its split, which is decoded at load."""
    root = _chexpert(tmp_path / "data")
    _replace_path(root / "train.csv", 3, f"{CHEXPERT}/train/patient00003/study1/x\x00.jpg")
    for seed in range(3):
        with pytest.raises(UsageError, match=r"^chexpert: .*x\x00\.jpg"):
            CheXpert().configured({"image_size": 8, "val_fraction": 0.3}).load(root, seed)
    listed = root / "train.csv"
    with pytest.raises(UsageError, match=r"^chexpert: .*x\x00\.jpg \(listed in .*\) does not exist"):
        files_digest([root / "x\x00.jpg"], root, "chexpert", listed)


def _mura(parent: Path) -> Path:
    root = parent / "MURA-v1.1"
    for split, patients in (("train", range(1, 5)), ("valid", range(11, 13))):
        listed = []
        for patient in patients:
            study = f"study1_{'positive' if patient % 2 else 'negative'}"
            relative = f"MURA-v1.1/{split}/XR_SHOULDER/patient{patient:05d}/{study}/image1.png"
            (parent / relative).parent.mkdir(parents=True, exist_ok=True)
            _grey(seed=patient).save(parent / relative)
            listed.append(relative)
        (root / f"{split}_image_paths.csv").write_text("\n".join(listed) + "\n")
    return root


@pytest.mark.parametrize(
    "escape",
    [
        "MURA-v1.1/train/XR_SHOULDER/../../../../outside/XR_SHOULDER/p/study1_positive/image1.png",
        "/tmp/XR_SHOULDER/patient00001/study1_positive/image1.png",
    ],
)
def test_mura_paths_escaping_the_data_root_are_refused(tmp_path: Path, escape: str) -> None:
    root = _mura(tmp_path / "data")
    table = root / "train_image_paths.csv"
    table.write_text(table.read_text() + escape + "\n")
    with pytest.raises(
        UsageError, match=r"^mura-shoulder: .*train_image_paths\.csv lists .*paths must be relative"
    ):
        MURAShoulder().configured({"image_size": 8, "val_fraction": 0.3}).load(root, 0)


def test_mura_binary_garbage_list_is_named(tmp_path: Path) -> None:
    root = _mura(tmp_path / "data")
    (root / "valid_image_paths.csv").write_bytes(bytes(range(256)))
    with pytest.raises(UsageError, match=r"^mura-shoulder: cannot read .*valid_image_paths\.csv"):
        MURAShoulder().configured({"image_size": 8, "val_fraction": 0.3}).load(root, 0)


def _dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    slope: str | None = "1",
    intercept: str = "0",
    pixel_data: bool = True,
    frames: int | None = None,
    rows_columns: tuple[int, int] | None = None,
) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.PatientID = path.stem
    ds.Rows, ds.Columns = rows_columns or pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if frames is not None:
        ds.NumberOfFrames = frames
    if pixel_data:
        ds.PixelData = pixels.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


PIXELS = (np.arange(120, dtype=np.uint16).reshape(10, 12) * 100) % 4096


def _rsna(root: Path, patients: dict[str, str] | None = None) -> Path:
    patients = patients or {
        f"p{i:03d}": ("Normal", "Lung Opacity", "No Lung Opacity / Not Normal")[i % 3] for i in range(12)
    }
    for patient in patients:
        if "/" not in patient and "\\" not in patient:
            _dicom(root / "stage_2_train_images" / f"{patient}.dcm", PIXELS)
    with (root / "stage_2_detailed_class_info.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["patientId", "class"])
        writer.writerows(patients.items())
    return root


@pytest.mark.parametrize(
    "patient", ["../../outside", "../outside", "/tmp/outside", "sub\\..\\..\\outside", ".."]
)
def test_rsna_patient_ids_escaping_the_image_folder_are_refused(tmp_path: Path, patient: str) -> None:
    """``<patientId>.dcm`` was joined to the image folder as is: ``../../outside`` read
    ``DATA_DIR/../outside.dcm``."""
    _dicom(tmp_path / "outside.dcm", PIXELS)
    _dicom(tmp_path / "data" / "outside.dcm", PIXELS)
    root = _rsna(tmp_path / "data")
    with (root / "stage_2_detailed_class_info.csv").open("a", newline="") as handle:
        csv.writer(handle).writerow([patient, "Normal"])
    with pytest.raises(UsageError, match=r"^rsna-pneumonia: .*line 14: patientId .* is not a file name"):
        RSNAPneumonia().configured({"image_size": 8, "val_fraction": 0.2, "test_fraction": 0.25}).load(
            root, 0
        )


def test_rsna_missing_column_and_garbage_table(tmp_path: Path) -> None:
    root = _rsna(tmp_path / "data")
    table = root / "stage_2_detailed_class_info.csv"
    table.write_text("patientId,Target\np001,1\n")
    dataset = RSNAPneumonia().configured({"image_size": 8})
    with pytest.raises(UsageError, match=r"^rsna-pneumonia: .*\.csv lacks the column\(s\) 'class'"):
        dataset.load(root, 0)
    table.write_bytes(bytes(range(256)))
    with pytest.raises(UsageError, match=r"^rsna-pneumonia: cannot read .*stage_2_detailed_class_info\.csv"):
        dataset.load(root, 0)


def _chestxray14(root: Path, findings: dict[int, str] | None = None) -> Path:
    (root / "images").mkdir(parents=True)
    rows, train_val, test = [], [], []
    for patient in range(1, 7):
        name = f"{patient:08d}_000.png"
        _grey(seed=patient).save(root / "images" / name)
        rows.append([name, (findings or {}).get(patient, "Atelectasis|Effusion"), str(patient)])
        (train_val if patient <= 4 else test).append(name)
    with (root / "Data_Entry_2017.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Image Index", "Finding Labels", "Patient ID"])
        writer.writerows(rows)
    (root / "train_val_list.txt").write_text("\n".join(train_val) + "\n")
    (root / "test_list.txt").write_text("\n".join(test) + "\n")
    return root


@pytest.mark.parametrize("finding", ["Efusion", "Atelectasis|Pneumonia|Cancer", "", "effusion"])
def test_chestxray14_unknown_findings_are_named(tmp_path: Path, finding: str) -> None:
    """A finding that is not one of the release's fourteen (a typo such as ``Efusion``) counted
    silently as no finding: wrong labels, recorded as valid."""
    root = _chestxray14(tmp_path / "nih", {3: finding})
    with pytest.raises(
        UsageError, match=r"^chestxray14: .*Data_Entry_2017\.csv gives 00000003_000\.png the Finding Labels"
    ):
        ChestXray14().configured({"image_size": 8, "val_fraction": 0.3}).load(root, 0)


def test_chestxray14_all_findings_of_the_release_are_accepted(tmp_path: Path) -> None:
    root = _chestxray14(
        tmp_path / "nih",
        {1: "No Finding", 2: "Infiltration|Mass|Nodule", 3: "Pneumothorax|Emphysema|Fibrosis",
         4: "Pleural_Thickening|Hernia|Pneumonia", 5: "Edema|Consolidation|Cardiomegaly"},
    )  # fmt: skip
    bundle = ChestXray14().configured({"image_size": 8, "val_fraction": 0.3}).load(root, 0)
    _check_items(bundle)


@pytest.mark.parametrize(
    "listed", ["../../../etc/passwd", "/etc/passwd", "images/00000001_000.png", "00000001_000.png\x00"]
)
def test_chestxray14_list_entries_outside_the_images_are_refused(tmp_path: Path, listed: str) -> None:
    root = _chestxray14(tmp_path / "nih")
    (root / "test_list.txt").write_text(f"00000005_000.png\n{listed}\n")
    with pytest.raises(
        UsageError, match=r"^chestxray14: .*test_list\.txt lists .*which Data_Entry_2017\.csv does not"
    ):
        ChestXray14().configured({"image_size": 8, "val_fraction": 0.3}).load(root, 0)


def test_chestxray14_missing_column_and_garbage_list(tmp_path: Path) -> None:
    root = _chestxray14(tmp_path / "nih")
    dataset = ChestXray14().configured({"image_size": 8, "val_fraction": 0.3})
    (root / "train_val_list.txt").write_bytes(bytes(range(256)))
    with pytest.raises(UsageError, match=r"^chestxray14: cannot read .*train_val_list\.txt"):
        dataset.load(root, 0)
    (root / "Data_Entry_2017.csv").write_text("Image Index,Patient ID\nx.png,1\n")
    with pytest.raises(UsageError, match=r"^chestxray14: .*lacks the column\(s\) 'Finding Labels'"):
        dataset.load(root, 0)


ISIC_INPUT, ISIC_TRUTH = "ISIC2018_Task3_Training_Input", "ISIC2018_Task3_Training_GroundTruth"
ISIC_COLUMNS = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")


def _isic(root: Path, extra: list[str] | None = None) -> Path:
    (root / ISIC_INPUT).mkdir(parents=True)
    (root / ISIC_TRUTH).mkdir()
    lines = ["image," + ",".join(ISIC_COLUMNS)]
    for index in range(20):
        image_id, diagnosis = f"ISIC_{index:07d}", ("MEL", "NV", "BCC", "BKL")[index % 4]
        Image.fromarray(np.full((12, 10, 3), index * 10, np.uint8)).save(
            root / ISIC_INPUT / f"{image_id}.jpg"
        )
        lines.append(image_id + "," + ",".join("1.0" if c == diagnosis else "0.0" for c in ISIC_COLUMNS))
    (root / ISIC_TRUTH / f"{ISIC_TRUTH}.csv").write_text("\n".join([*lines, *(extra or [])]) + "\n")
    return root


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        ("../" * 6 + "etc/passwd,1,0,0,0,0,0,0", r"lists \.\./.*passwd, not found in"),
        ("/etc/passwd,1,0,0,0,0,0,0", "lists /etc/passwd, not found in"),
        ("ISIC_0000001,nan,nan,nan,nan,nan,nan,nan", r"line 22 is not one-hot \(0 classes\)"),
        ("ISIC_0000001,inf,0,0,0,0,0,inf", r"line 22 is not one-hot \(2 classes\)"),
        ("ISIC_0000001,yes,no,no,no,no,no,no", "line 22 is not image,MEL"),
        ("ISIC_0000001,1", "line 22 is not image,MEL"),
    ],
)
def test_isic_hostile_rows(tmp_path: Path, row: str, fragment: str) -> None:
    root = _isic(tmp_path / "isic", [row])
    with pytest.raises(UsageError, match=f"^isic2018-skin4: .*{fragment}"):
        ISIC2018Skin4().configured({"image_size": 8, "nv_samples": 0}).load(root, 0)


def test_isic_unknown_classes_are_skipped_as_documented(tmp_path: Path) -> None:
    """Rows of the three classes SKIN4 leaves out (AKIEC, DF, VASC) are skipped, not errors,
    even when their image is missing (the loader documents keeping only MEL, NV, BCC, BKL)."""
    root = _isic(tmp_path / "isic", ["ISIC_9999999,0,0,0,1,0,0,0", "ISIC_9999998,0,0,0,0,0,0,1"])
    bundle = ISIC2018Skin4().configured({"image_size": 8, "nv_samples": 0}).load(root, 0)
    assert len(_all_items(bundle)) == 20


# --------------------------------------------------------------------------- NIfTI

SHAPE = (24, 20, 8)


def _nifti(root: Path, image0: np.ndarray | None = None) -> Path:
    entries = []
    for index in range(3):
        image = np.full(SHAPE, -1000, np.float32)
        image[3:21, 3:17, :] = 40
        image[8:14, 6:12, 2:6] = 150
        label = np.zeros(SHAPE, np.uint8)
        label[8:14, 6:12, 2:6] = 1
        if index == 0 and image0 is not None:
            image = image0
        for folder, name, array in (("imagesTr", f"img{index}", image), ("labelsTr", f"lab{index}", label)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            nib.save(
                nib.Nifti1Image(array, np.diag([1.5, 1.5, 2.0, 1.0])), str(root / folder / f"{name}.nii.gz")
            )
        entries.append({"image": f"imagesTr/img{index}.nii.gz", "label": f"labelsTr/lab{index}.nii.gz"})
    split = {"labels": {"0": "background", "1": "organ"}, "training": entries[:2], "validation": entries[2:]}
    (root / "dataset.json").write_text(json.dumps(split))
    return root


def _with(value: float) -> np.ndarray:
    image = np.full(SHAPE, 40.0, np.float32)
    image[10, 10, 3] = value
    return image


@pytest.mark.parametrize(
    ("image", "fragment"),
    [
        (_with(np.nan), "holds NaN or infinite values"),  # was loaded: NaN volumes, then NaN losses
        (_with(np.inf), "holds NaN or infinite values"),
        (np.zeros((*SHAPE, 1, 1), np.float32), "must be a single 3-D volume"),
        (np.zeros((0, 4, 4), np.float32), "must be a single 3-D volume"),
    ],
    ids=["nan", "inf", "5d", "empty"],
)
def test_hostile_nifti_volumes_are_named(tmp_path: Path, image: np.ndarray, fragment: str) -> None:
    root = _nifti(tmp_path / "data", image)
    with pytest.raises(UsageError, match=f"^nifti: image .*img0\\.nii\\.gz [^\n]*{fragment}"):
        Nifti().configured({"patch": 16, "samples_per_volume": 1}).load(root, 0)


@pytest.mark.parametrize("intensity", ["window", "minmax"])
def test_nifti_nan_in_a_later_volume_is_named_when_read(tmp_path: Path, intensity: str) -> None:
    root = _nifti(tmp_path / "data")
    nib.save(
        nib.Nifti1Image(_with(np.nan), np.diag([1.5, 1.5, 2.0, 1.0])), str(root / "imagesTr" / "img2.nii.gz")
    )
    with pytest.raises(UsageError, match=r"^nifti: image .*img2\.nii\.gz holds NaN"):
        bundle = (
            Nifti().configured({"patch": 16, "samples_per_volume": 1, "intensity": intensity}).load(root, 0)
        )
        _all_items(bundle)


# --------------------------------------------------------------------------- DICOM


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"pixel_data": False}, "holds no pixel data"),
        ({"frames": 3}, "has 3 frames; only single-frame images are supported"),
        ({"rows_columns": (300, 400)}, "cannot decode the pixels of"),
        ({"slope": "NaN"}, "NaN or infinite values through its Modality LUT"),  # was NaN images
        ({"slope": "inf"}, "NaN or infinite values through its Modality LUT"),
        ({"slope": "1e308", "intercept": "1e308"}, "NaN or infinite values through its Modality LUT"),
    ],
    ids=["no_pixel_data", "multi_frame", "short_pixel_data", "nan_slope", "inf_slope", "huge_slope"],
)
def test_hostile_dicom_files_are_named(tmp_path: Path, options: dict[str, Any], fragment: str) -> None:
    path = _dicom(tmp_path / "odd.dcm", PIXELS, **options)
    with pytest.raises(UsageError, match=f"^dicom: [^\n]*{fragment}") as error:
        read_dicom(path)
    assert str(path) in str(error.value)
    for window in ("minmax", "bits", "-100,100"):
        with pytest.raises(UsageError, match=fragment):
            DicomReader(Window.parse(window))(path)


@pytest.mark.parametrize(
    "options", [{"pixel_data": False}, {"slope": "NaN"}], ids=["no_pixel_data", "nan_slope"]
)
def test_a_hostile_dicom_in_the_dicom_dataset_is_named(tmp_path: Path, options: dict[str, Any]) -> None:
    """Files are read when an item is: the broken one is named at load (when it is the first
    of its split) or when read, never delivered as an image."""
    root = tmp_path / "data"
    for label in ("a", "b"):
        for index in range(5):
            _dicom(root / label / f"{index}.dcm", PIXELS + index)
    _dicom(root / "b" / "2.dcm", PIXELS, **options)
    with pytest.raises(UsageError, match=r"^dicom: .*b/2\.dcm"):
        bundle = DicomFolder().configured({"image_size": 8, "window": "-100,100"}).load(root, 0)
        _all_items(bundle)
