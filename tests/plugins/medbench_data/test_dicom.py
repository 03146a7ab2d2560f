"""``dicom_io`` and the ``dicom`` dataset on real DICOM files written with pydicom."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from medbench.errors import UsageError
from medbench.testing import check_dataset
from medbench_data.dicom_io import Window, read_dicom, read_header, read_series, slice_order
from medbench_data.dicomfolder import DicomFolder


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    modality: str = "CT",
    slope: float | None = 2.0,
    intercept: float | None = -1024.0,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    window: tuple[float, float] | None = None,
    position: Sequence[float] | None = None,
    orientation: Sequence[float] | None = (1, 0, 0, 0, 1, 0),
    instance: int | None = None,
    series_uid: str = "1.2.826.0.1.3680043.8.498.1",
) -> Path:
    """A minimal valid single-frame DICOM file (explicit VR little endian)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.0"
    ds.SeriesInstanceUID = series_uid
    ds.Modality = modality
    ds.PatientID = "anonymous"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    if slope is not None:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if position is not None:
        ds.ImagePositionPatient = list(position)
    if orientation is not None and position is not None:
        ds.ImageOrientationPatient = list(orientation)
    if instance is not None:
        ds.InstanceNumber = instance
    ds.PixelSpacing = [0.7, 0.8]
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


STORED = np.array([[0, 512], [1024, 2048]], dtype=np.uint16)
"""Stored values; with slope 2 and intercept -1024 they are -1024, 0, 1024 and 3072 HU."""


def test_read_dicom_applies_the_modality_lut(tmp_path: Path) -> None:
    image = read_dicom(write_dicom(tmp_path / "ct.dcm", STORED, bits_stored=12))
    assert image.values.dtype == np.float32
    np.testing.assert_array_equal(image.values, [[-1024.0, 0.0], [1024.0, 3072.0]])
    assert image.modality == "CT" and image.photometric == "MONOCHROME2"
    assert image.value_range == (-1024.0, 4095 * 2 - 1024.0), "12 stored bits through the LUT"
    signed = np.array([[-1000, 0], [50, 1000]], dtype=np.int16)
    plain = read_dicom(write_dicom(tmp_path / "signed.dcm", signed, slope=None, modality="MR"))
    np.testing.assert_array_equal(plain.values, signed.astype(np.float32))
    assert plain.value_range == (-32768.0, 32767.0)


def test_windows_map_hu_to_unit_range(tmp_path: Path) -> None:
    image = read_dicom(write_dicom(tmp_path / "ct.dcm", STORED, bits_stored=12, window=(40, 400)))
    fixed = image.to_unit(Window.parse("-1024,1024"))
    np.testing.assert_allclose(fixed, [[0.0, 0.5], [1.0, 1.0]])
    assert fixed.dtype == np.float32
    np.testing.assert_allclose(image.to_unit(Window.parse("center=0, width=2048")), fixed)
    np.testing.assert_allclose(image.to_unit(Window.parse("low=-1024,high=1024")), fixed)
    # the file's own window 40 ± 200: -160..240 HU
    np.testing.assert_allclose(image.to_unit(Window.parse("file")), [[0.0, 160 / 400], [1.0, 1.0]])
    np.testing.assert_allclose(image.to_unit(Window("minmax")), [[0.0, 0.25], [0.5, 1.0]])
    np.testing.assert_allclose(
        image.to_unit(Window("bits")), [[0.0, 1024 / 8190], [2048 / 8190, 4096 / 8190]]
    )
    assert Window.parse("-175,250").bounds == (-175.0, 250.0)
    assert Window.parse("c=40,w=400").bounds == (-160.0, 240.0)
    for bad in ("auto", "250,-175", "center=40", "1,2,3", "center=40,width=0", "low=a,high=2"):
        with pytest.raises(ValueError, match="window"):
            Window.parse(bad)


def test_file_window_missing_is_a_clear_error(tmp_path: Path) -> None:
    image = read_dicom(write_dicom(tmp_path / "nowin.dcm", STORED))
    with pytest.raises(UsageError, match=r"nowin\.dcm has no usable WindowCenter/WindowWidth"):
        image.to_unit(Window("file"))


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    pixels = np.array([[0, 64], [128, 255]], dtype=np.uint8)
    mono1 = read_dicom(
        write_dicom(tmp_path / "m1.dcm", pixels, modality="CR", slope=None, photometric="MONOCHROME1")
    )
    mono2 = read_dicom(write_dicom(tmp_path / "m2.dcm", pixels, modality="CR", slope=None))
    for window in (Window("bits"), Window("minmax"), Window.parse("0,255")):
        np.testing.assert_allclose(mono2.to_unit(window), pixels / 255.0, atol=1e-6)
        np.testing.assert_allclose(mono1.to_unit(window), 1.0 - pixels / 255.0, atol=1e-6)


def _write_series(
    folder: Path, z_values: Sequence[float], orientation: Sequence[float], **kwargs: object
) -> None:
    """Slice k holds the constant k and lies at height z_values[k]; names and instance
    numbers are scrambled so that only the positions give the true order."""
    rng = np.random.default_rng(3)
    names = rng.permutation(len(z_values))
    for k, z in enumerate(z_values):
        write_dicom(
            folder / f"IM{names[k]:04d}.dcm",
            np.full((3, 4), 1024 + k, dtype=np.uint16),
            slope=1.0,
            intercept=-1024.0,
            position=(-10.0, 20.0, z),
            orientation=orientation,
            instance=int(names[(k + 2) % len(z_values)]) + 1,
            **kwargs,  # type: ignore[arg-type]
        )


def test_series_sorted_by_position_along_the_normal(tmp_path: Path) -> None:
    z = [0.0, 2.5, 5.0, 7.5, 10.0, 12.5]
    _write_series(tmp_path / "axial", z, (1, 0, 0, 0, 1, 0))
    series = read_series(tmp_path / "axial")
    assert series.volume.shape == (6, 3, 4) and series.ordered_by == "position"
    np.testing.assert_array_equal(series.volume[:, 0, 0], np.arange(6, dtype=np.float32))
    assert series.spacing == pytest.approx((2.5, 0.7, 0.8))
    # rows along x, columns along -y: the normal is -z, so the slice order runs from high z to low z
    _write_series(tmp_path / "flipped", z, (1, 0, 0, 0, -1, 0))
    flipped = read_series(tmp_path / "flipped")
    np.testing.assert_array_equal(flipped.volume[:, 0, 0], np.arange(6, dtype=np.float32)[::-1])
    unit = series.to_unit(Window("minmax"))
    np.testing.assert_allclose(unit[:, 0, 0], np.arange(6) / 5)


def test_series_falls_back_to_instance_number(tmp_path: Path) -> None:
    folder = tmp_path / "noposition"
    for instance, name in ((3, "a.dcm"), (1, "b.dcm"), (2, "c.dcm")):
        write_dicom(folder / name, np.full((2, 2), instance, np.uint16), slope=None, instance=instance)
    series = read_series(folder)
    assert series.ordered_by == "instance"
    np.testing.assert_array_equal(series.volume[:, 0, 0], [1, 2, 3])
    assert [p.name for p in series.files] == ["b.dcm", "c.dcm", "a.dcm"]
    order, how, keys = slice_order([read_header(folder / n) for n in ("a.dcm", "b.dcm", "c.dcm")])
    assert (order, how, keys) == ([1, 2, 0], "instance", [1.0, 2.0, 3.0])


def test_series_errors_name_the_folder_or_file(tmp_path: Path) -> None:
    mixed = tmp_path / "mixed"
    write_dicom(mixed / "a.dcm", STORED, instance=1, series_uid="1.2.3")
    write_dicom(mixed / "b.dcm", STORED, instance=1, series_uid="1.2.4")
    with pytest.raises(UsageError, match=r"mixed holds 2 series \(1\.2\.3, 1\.2\.4\)"):
        read_series(mixed)
    assert read_series(mixed, series_uid="1.2.4").files == (mixed / "b.dcm",)
    unordered = tmp_path / "unordered"
    write_dicom(unordered / "a.dcm", STORED)
    write_dicom(unordered / "b.dcm", STORED)
    with pytest.raises(UsageError, match=r"cannot order the slices of .*unordered"):
        read_series(unordered)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a slice")
    with pytest.raises(UsageError, match=r"no DICOM files .* in .*empty"):
        read_series(empty)
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"not a dicom file at all")
    with pytest.raises(UsageError, match=r"cannot read DICOM file .*broken\.dcm"):
        read_dicom(broken)


# --------------------------------------------------------------------------- the dicom dataset


def _class_folders(root: Path, per_class: int = 5, modality: str = "CT") -> Path:
    for label, hu in (("lesion", 140.0), ("normal", 40.0)):
        for index in range(per_class):
            stored = np.full((12, 10), int((hu + 1024) / 2), dtype=np.uint16)
            stored[0, 0] = index  # distinct files
            write_dicom(root / label / f"{index}.dcm", stored, window=(40, 400), modality=modality)
    return root


@pytest.mark.parametrize(("code", "modality"), [("CR", "xray"), ("MR", "mri"), ("PT", "pt")])
def test_dicom_folder_names_the_modality(tmp_path: Path, code: str, modality: str) -> None:
    bundle = DicomFolder().configured({"image_size": 8}).load(_class_folders(tmp_path, 5, code), 0)
    assert bundle.modality == modality and bundle.intensity_unit == ""


def test_dicom_folder_with_an_hu_window(tmp_path: Path) -> None:
    root = _class_folders(tmp_path / "data")
    (root / "normal" / "notes.txt").write_text("ignored")
    dataset = DicomFolder().configured({"image_size": 8, "window": "center=40,width=400", "fit": "crop"})
    bundle = check_dataset(dataset, root)
    assert bundle.class_names == ("lesion", "normal")
    assert bundle.input_shape == (1, 8, 8) and bundle.modality == "ct"
    assert bundle.intensity_window == (-160.0, 240.0) and bundle.intensity_unit == "HU"
    assert sum(len(s) for s in (bundle.train, bundle.val, bundle.test)) == 10
    items = [bundle.train[i] for i in range(len(bundle.train))]
    for image, label in items:
        assert label.dtype == torch.int64
        expected = (140.0 + 160) / 400 if int(label) == 0 else 0.5
        assert float(image[0, 4, 4]) == pytest.approx(expected, abs=1e-5)
    minmax = DicomFolder().configured({"image_size": 8}).load(root, 0)
    assert minmax.intensity_window is None and minmax.intensity_unit == ""
    assert minmax.fingerprint != bundle.fingerprint


def test_dicom_folder_series_folders(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for label in ("a", "b"):
        for scan in range(4):
            _write_series(
                root / label / f"scan{scan}", [0.0, 1.0, 2.0], (1, 0, 0, 0, 1, 0), series_uid=f"1.2.{scan}"
            )
    with pytest.raises(UsageError, match=r"scan0 is a folder inside class folder .*series=slices"):
        DicomFolder().load(root, 0)
    slices = DicomFolder().configured(
        {"series": "slices", "image_size": 8, "val_fraction": 0.25, "test_fraction": 0.25}
    )
    bundle = check_dataset(slices, root)
    assert sum(len(s) for s in (bundle.train, bundle.val, bundle.test)) == 24
    scans = [{p.parent for p in split.paths} for split in (bundle.train, bundle.val, bundle.test)]
    assert not (scans[0] & scans[1] or scans[0] & scans[2] or scans[1] & scans[2]), (
        "a series stays in one split"
    )
    assert all(len(split.paths) % 3 == 0 for split in (bundle.train, bundle.val, bundle.test))
    middle = (
        DicomFolder()
        .configured({"series": "middle", "val_fraction": 0.25, "test_fraction": 0.25})
        .load(root, 0)
    )
    paths = [p for split in (middle.train, middle.val, middle.test) for p in split.paths]
    assert len(paths) == 8
    for path in paths:
        assert float(read_dicom(path).values[0, 0]) == 1.0, "the middle slice by position (constant k=1)"


def test_dicom_folder_errors(tmp_path: Path) -> None:
    dataset = DicomFolder()
    with pytest.raises(UsageError, match="dicom needs --data-dir"):
        dataset.load(None, 0)
    with pytest.raises(UsageError, match="is not a directory"):
        dataset.load(tmp_path / "missing", 0)
    root = tmp_path / "data"
    write_dicom(root / "only" / "x.dcm", STORED)
    with pytest.raises(UsageError, match=f"only one class folder in {root}; expected layout"):
        dataset.load(root, 0)
    (root / "other").mkdir()
    (root / "other" / "readme.txt").write_text("not dicom")
    with pytest.raises(UsageError, match=r"class folder .*other has no DICOM files"):
        dataset.load(root, 0)
    (root / "other" / "bad.dcm").write_bytes(b"\0" * 200)
    with pytest.raises(UsageError, match=r"cannot read DICOM file .*bad\.dcm"):
        dataset.load(root, 0)
    with pytest.raises(UsageError, match="bad window 'soft'"):
        DicomFolder().configured({"window": "soft"})
    with pytest.raises(UsageError, match="series must be one of"):
        DicomFolder().configured({"series": "volume"})
