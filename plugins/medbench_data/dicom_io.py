"""Reading DICOM files and series with pydicom, and mapping their values to [0, 1].

* :func:`read_dicom` reads one single-frame file to its *modality* values: the stored
  pixels through the Modality LUT, i.e. ``RescaleSlope`` × stored + ``RescaleIntercept``
  (Hounsfield units for CT) or a Modality LUT Sequence, with pydicom's ``apply_modality_lut``.
* :func:`read_series` reads a folder of slices of one ``SeriesInstanceUID`` to a volume
  ``(D, H, W)``, slices sorted by their position along the slice normal
  (``ImagePositionPatient`` · (row × column direction of ``ImageOrientationPatient``)),
  falling back to ``InstanceNumber`` when a slice lacks position or orientation.
* :class:`Window` maps modality values to [0, 1]: a fixed window given as ``(low, high)``
  or as centre/width, the file's own ``WindowCenter``/``WindowWidth``, the full range of
  the stored bits, or each image's min-max. ``MONOCHROME1`` images (where low values are
  bright) are inverted after the window, so that 1 is always bright.

Centre/width windows are linear between ``center - width / 2`` and ``center + width / 2``
(DICOM's ``LINEAR_EXACT`` VOI function), clipped outside. VOI LUT sequences and
multi-frame files are not supported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from medbench.api.toolkit import UsageError

DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".ima"})
WINDOW_FORMS = "minmax | file | bits | LOW,HIGH (e.g. -175,250) | center=C,width=W (e.g. center=40,width=400)"
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)


def _pydicom() -> Any:
    import pydicom

    return pydicom


def _modality_lut() -> Any:
    """pydicom's ``apply_modality_lut`` (``pydicom.pixels`` since 3.0, a utility module before)."""
    try:
        from pydicom.pixels import apply_modality_lut
    except ImportError:  # pydicom 2.x
        from pydicom.pixel_data_handlers.util import apply_modality_lut  # type: ignore[no-redef]
    return apply_modality_lut


def is_dicom_file(path: Path) -> bool:
    """Whether ``path`` looks like a DICOM file: a ``.dcm``/``.dicom``/``.ima`` suffix, or no
    suffix and the ``DICM`` marker after the 128-byte preamble. Hidden files never are."""
    if path.name.startswith(".") or not path.is_file():
        return False
    suffix = path.suffix.lower()
    if suffix in DICOM_SUFFIXES:
        return True
    if suffix:
        return False
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


# --------------------------------------------------------------------------- windows


@dataclass(frozen=True)
class Window:
    """How modality values become [0, 1].

    Attributes:
        kind: ``fixed`` (``low``..``high``), ``file`` (the file's WindowCenter/WindowWidth),
            ``bits`` (the range the stored bits can hold, through the Modality LUT; what a
            plain 8- or 16-bit export of the pixels shows) or ``minmax`` (each image's own
            range; a constant image becomes 0).
        low: Value mapped to 0 (``fixed`` only).
        high: Value mapped to 1 (``fixed`` only).
    """

    kind: Literal["fixed", "file", "bits", "minmax"]
    low: float | None = None
    high: float | None = None

    def __post_init__(self) -> None:
        if self.kind == "fixed":
            if self.low is None or self.high is None or not self.low < self.high:
                raise ValueError(f"a fixed window needs low < high, got {self.low}, {self.high}")
        elif self.low is not None or self.high is not None:
            raise ValueError(f"a {self.kind} window takes no low/high")

    @classmethod
    def center_width(cls, center: float, width: float) -> Window:
        """The fixed window ``center ± width / 2``."""
        if not width > 0:
            raise ValueError(f"window width must be positive, got {width}")
        return cls("fixed", center - width / 2, center + width / 2)

    @classmethod
    def parse(cls, text: str) -> Window:
        """A window from its setting text, one of :data:`WINDOW_FORMS`.

        Raises:
            ValueError: On any other text.
        """
        spec = text.strip().lower().replace(" ", "")
        if spec in {"minmax", "file", "bits"}:
            return cls(spec)  # type: ignore[arg-type]
        parts = spec.split(",")
        try:
            if len(parts) == 2 and all("=" in part for part in parts):
                named = dict(part.split("=", 1) for part in parts)
                if set(named) == {"center", "width"} or set(named) == {"c", "w"}:
                    center = float(named.get("center", named.get("c", "nan")))
                    width = float(named.get("width", named.get("w", "nan")))
                    if math.isfinite(center) and math.isfinite(width):
                        return cls.center_width(center, width)
                elif set(named) == {"low", "high"}:
                    return cls("fixed", float(named["low"]), float(named["high"]))
            elif len(parts) == 2:
                return cls("fixed", float(parts[0]), float(parts[1]))
        except ValueError as error:
            raise ValueError(f"bad window {text!r} ({error}); use {WINDOW_FORMS}") from None
        raise ValueError(f"bad window {text!r}; use {WINDOW_FORMS}")

    @property
    def bounds(self) -> tuple[float, float] | None:
        """``(low, high)`` for a fixed window, else None."""
        if self.kind == "fixed" and self.low is not None and self.high is not None:
            return (self.low, self.high)
        return None


@dataclass(frozen=True)
class _Display:
    """What windowing needs to know about an image or a series besides its values."""

    path: Path
    photometric: str
    window_center: float | None
    window_width: float | None
    value_range: tuple[float, float]


def _apply_window(values: np.ndarray, window: Window, display: _Display) -> np.ndarray:
    if window.kind == "minmax":
        low, high = float(values.min()), float(values.max())
    elif window.kind == "bits":
        low, high = display.value_range
    elif window.kind == "file":
        if display.window_center is None or display.window_width is None or display.window_width <= 0:
            raise UsageError(
                f"dicom: {display.path} has no usable WindowCenter/WindowWidth; choose another window "
                f"({WINDOW_FORMS})"
            )
        low = display.window_center - display.window_width / 2
        high = display.window_center + display.window_width / 2
    else:
        low, high = window.low, window.high  # type: ignore[assignment]
    if high > low:
        unit = (values.astype(np.float64) - low) / (high - low)
    else:
        unit = np.zeros(values.shape, dtype=np.float64)
    unit = np.clip(unit, 0.0, 1.0)
    if display.photometric == "MONOCHROME1":
        unit = 1.0 - unit
    return unit.astype(np.float32)


# --------------------------------------------------------------------------- single files


@dataclass(frozen=True)
class DicomImage:
    """One single-frame DICOM image.

    Attributes:
        values: ``(rows, columns)`` ``float32`` modality values (HU for CT); colour images
            are converted to ITU-R 601 luma of their RGB values.
        path: The file.
        modality: The ``Modality`` tag (``CT``, ``MR``, ``CR``, ``DX``...), or empty.
        photometric: ``PhotometricInterpretation`` (``MONOCHROME1``, ``MONOCHROME2``, ``RGB``...).
        window_center: The first ``WindowCenter`` of the file, or None.
        window_width: The first ``WindowWidth`` of the file, or None.
        value_range: The lowest and highest value the stored bits can give, through the
            Modality LUT.
        series_uid: ``SeriesInstanceUID``, or empty.
    """

    values: np.ndarray
    path: Path
    modality: str
    photometric: str
    window_center: float | None
    window_width: float | None
    value_range: tuple[float, float]
    series_uid: str

    def to_unit(self, window: Window) -> np.ndarray:
        """The image in [0, 1] (``float32``) through ``window``, MONOCHROME1 inverted.

        Raises:
            UsageError: ``file`` window on a file without WindowCenter/WindowWidth.
        """
        return _apply_window(self.values, window, _display_of(self))


def _display_of(item: DicomImage | DicomSeries) -> _Display:
    return _Display(item.path, item.photometric, item.window_center, item.window_width, item.value_range)


def _first_number(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        if not len(value):
            return None
        value = value[0]
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _read(path: Path, header_only: bool) -> Any:
    pydicom = _pydicom()
    try:
        return pydicom.dcmread(path, stop_before_pixels=header_only)
    except Exception as error:  # pydicom raises many kinds on a corrupt file
        raise UsageError(f"dicom: cannot read DICOM file {path}: {type(error).__name__}: {error}") from None


def read_header(path: Path) -> Any:
    """The header of a DICOM file (``pydicom.Dataset`` without the pixel data).

    Raises:
        UsageError: When the file is not readable DICOM, naming it.
    """
    return _read(path, header_only=True)


def _value_range(ds: Any, path: Path) -> tuple[float, float]:
    apply_modality_lut = _modality_lut()
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        stored = np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1], dtype=np.float64)
    else:
        stored = np.array([0, 2**bits - 1], dtype=np.float64)
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        return float(stored[0]), float(stored[1])
    try:
        mapped = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
    except Exception as error:
        raise UsageError(f"dicom: bad Modality LUT in {path}: {error}") from None
    if not np.isfinite(mapped.astype(np.float32)).all():
        raise UsageError(f"dicom: bad Modality LUT in {path}: it maps the stored range to NaN or infinity")
    return float(mapped.min()), float(mapped.max())


def read_dicom(path: Path) -> DicomImage:
    """Read a single-frame DICOM file to its modality values.

    Raises:
        UsageError: When the file is not readable DICOM, has no or undecodable pixel data
            (compressed transfer syntaxes need their pydicom plugins), holds several frames,
            or has a Modality LUT that gives NaN or infinite values; the message names the file.
    """
    apply_modality_lut = _modality_lut()
    ds = _read(path, header_only=False)
    if "PixelData" not in ds:
        raise UsageError(f"dicom: {path} holds no pixel data")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise UsageError(f"dicom: {path} has {frames} frames; only single-frame images are supported")
    try:
        pixels = ds.pixel_array
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        if samples == 1:
            values = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float64)
        else:
            values = np.asarray(pixels, dtype=np.float64)[..., :3] @ _LUMA
    except UsageError:
        raise
    except Exception as error:
        raise UsageError(
            f"dicom: cannot decode the pixels of {path}: {type(error).__name__}: {error}"
        ) from None
    if values.ndim != 2:
        raise UsageError(f"dicom: {path} has pixels of shape {values.shape}; expected one 2D image")
    values = values.astype(np.float32)
    if not np.isfinite(values).all():
        raise UsageError(
            f"dicom: {path} has NaN or infinite values through its Modality LUT "
            "(RescaleSlope, RescaleIntercept)"
        )
    return DicomImage(
        values=values,
        path=path,
        modality=str(ds.get("Modality", "") or ""),
        photometric=str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2"),
        window_center=_first_number(ds.get("WindowCenter")),
        window_width=_first_number(ds.get("WindowWidth")),
        value_range=_value_range(ds, path),
        series_uid=str(ds.get("SeriesInstanceUID", "") or ""),
    )


def read_dicom_unit(path: Path, window: Window) -> np.ndarray:
    """:func:`read_dicom` then :meth:`DicomImage.to_unit`: a 2D ``float32`` array in [0, 1]."""
    return read_dicom(path).to_unit(window)


@dataclass(frozen=True)
class DicomReader:
    """A picklable ``path -> [0, 1] array`` reader with a fixed window (for data loaders)."""

    window: Window

    def __call__(self, path: Path) -> np.ndarray:
        return read_dicom_unit(path, self.window)


# --------------------------------------------------------------------------- series


@dataclass(frozen=True)
class DicomSeries:
    """A volume read from the slices of one series.

    Attributes:
        volume: ``(D, H, W)`` ``float32`` modality values, slices in spatial order.
        files: The slice files in that order.
        path: The folder.
        series_uid: ``SeriesInstanceUID``.
        modality: ``Modality`` of the first slice.
        photometric: ``PhotometricInterpretation`` of the first slice.
        window_center: First ``WindowCenter`` of the first slice, or None.
        window_width: First ``WindowWidth`` of the first slice, or None.
        value_range: Range the stored bits can give, through each slice's Modality LUT.
        spacing: ``(slice, row, column)`` spacing in mm when the headers give it, else None.
        ordered_by: ``position`` or ``instance`` (how the slices were sorted).
    """

    volume: np.ndarray
    files: tuple[Path, ...]
    path: Path
    series_uid: str
    modality: str
    photometric: str
    window_center: float | None
    window_width: float | None
    value_range: tuple[float, float]
    spacing: tuple[float, float, float] | None
    ordered_by: Literal["position", "instance"]

    def to_unit(self, window: Window) -> np.ndarray:
        """The volume in [0, 1] through ``window`` (``minmax`` over the whole volume)."""
        return _apply_window(self.volume, window, _display_of(self))


def _floats(value: Any, count: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count and all(map(math.isfinite, numbers)) else None


def slice_order(headers: Sequence[Any]) -> tuple[list[int], Literal["position", "instance"], list[float]]:
    """The order of slices: by position along the slice normal, else by ``InstanceNumber``.

    Args:
        headers: pydicom datasets of the slices (headers are enough).

    Returns:
        ``(order, how, keys)``: indices into ``headers`` in spatial order, ``"position"`` or
        ``"instance"``, and the sorted keys (mm along the normal, or instance numbers).

    Raises:
        ValueError: When neither positions with one orientation nor instance numbers are
            present on every slice.
    """
    orientations = [_floats(h.get("ImageOrientationPatient"), 6) for h in headers]
    positions = [_floats(h.get("ImagePositionPatient"), 3) for h in headers]
    if all(orientations) and all(positions):
        first = np.asarray(orientations[0], dtype=np.float64)
        same = all(np.allclose(np.asarray(o), first, atol=1e-4) for o in orientations)
        if same:
            normal = np.cross(first[:3], first[3:])
            keys = [float(np.dot(np.asarray(p), normal)) for p in positions]
            instance = [_first_number(h.get("InstanceNumber")) or 0.0 for h in headers]
            order = sorted(range(len(headers)), key=lambda i: (keys[i], instance[i]))
            return order, "position", [keys[i] for i in order]
    numbers = [_first_number(h.get("InstanceNumber")) for h in headers]
    if all(n is not None for n in numbers):
        order = sorted(range(len(headers)), key=lambda i: numbers[i])  # type: ignore[arg-type,return-value]
        return order, "instance", [float(numbers[i]) for i in order]  # type: ignore[arg-type]
    raise ValueError(
        "the slices lack ImagePositionPatient/ImageOrientationPatient (one orientation) and InstanceNumber"
    )


def series_files(folder: Path) -> list[Path]:
    """The DICOM files directly inside ``folder`` (see :func:`is_dicom_file`), sorted by name."""
    return sorted(p for p in folder.iterdir() if is_dicom_file(p))


def read_series(folder: Path, series_uid: str | None = None) -> DicomSeries:
    """Read the slices of one series in ``folder`` into a volume.

    Args:
        folder: Holds the slice files (other files are ignored).
        series_uid: Which series to read when the folder holds several; None requires one.

    Raises:
        UsageError: When the folder has no DICOM files, holds several series and none was
            chosen, a slice is unreadable or of another size, or the slices cannot be ordered.
    """
    if not folder.is_dir():
        raise UsageError(f"dicom: {folder} is not a directory of DICOM slices")
    files = series_files(folder)
    if not files:
        raise UsageError(f"dicom: no DICOM files (.dcm, .dicom, .ima or DICM-marked) in {folder}")
    headers = [read_header(path) for path in files]
    uids = [str(h.get("SeriesInstanceUID", "") or "") for h in headers]
    found = sorted(set(uids))
    if series_uid is None and len(found) > 1:
        raise UsageError(f"dicom: {folder} holds {len(found)} series ({', '.join(found)}); choose one")
    wanted = series_uid if series_uid is not None else found[0]
    chosen = [i for i, uid in enumerate(uids) if uid == wanted]
    if not chosen:
        raise UsageError(f"dicom: {folder} holds no slice of series {wanted!r} (found {', '.join(found)})")
    try:
        order, how, keys = slice_order([headers[i] for i in chosen])
    except ValueError as error:
        raise UsageError(f"dicom: cannot order the slices of {folder}: {error}") from None
    ordered = [files[chosen[i]] for i in order]
    images = [read_dicom(path) for path in ordered]
    shape = images[0].values.shape
    for image in images:
        if image.values.shape != shape:
            raise UsageError(
                f"dicom: slice {image.path} is {image.values.shape}, the first slice of {folder} is {shape}"
            )
    first_header = headers[chosen[order[0]]]
    spacing = None
    pixel = _floats(first_header.get("PixelSpacing"), 2)
    if pixel is not None:
        between: float | None
        if how == "position" and len(keys) > 1:
            between = float(np.median(np.diff(keys)))
        else:
            between = _first_number(first_header.get("SpacingBetweenSlices")) or _first_number(
                first_header.get("SliceThickness")
            )
        if between:
            spacing = (abs(between), pixel[0], pixel[1])
    lows, highs = zip(*(image.value_range for image in images), strict=True)
    first = images[0]
    return DicomSeries(
        volume=np.stack([image.values for image in images]),
        files=tuple(ordered),
        path=folder,
        series_uid=wanted,
        modality=first.modality,
        photometric=first.photometric,
        window_center=first.window_center,
        window_width=first.window_width,
        value_range=(min(lows), max(highs)),
        spacing=spacing,
        ordered_by=how,
    )
