"""``phantom3d``: synthetic CT-like abdominal volumes with organ labels, for 3D segmentation.

Every volume is generated on the fly from ``(seed, split, index)`` with vectorised torch
code: an elliptical body (subcutaneous fat around soft tissue) on air, a liver, two
kidneys, a spleen and the aorta, each with its own shape, level and texture, and a bright
spine that is labelled background (a hard negative for the aorta and the kidneys). No
file and no network are needed, which makes it the 3D dataset of the smoke suite and of
the tests.

Layout: images are ``(1, D, H, W)`` with the axial slices first, oriented like the ``nifti``
dataset's RAS volumes: ``D`` runs from inferior to superior, ``H`` from the patient's left
to right (the liver is at high ``H``) and ``W`` from posterior to anterior.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from medbench.api import Dataset, DatasetBundle
from medbench.api.toolkit import UsageError
from medbench_data._common import fingerprint

GENERATOR_VERSION = "phantom3d-2"
"""Changed whenever the generator draws other volumes for the same settings and seed."""

CLASS_NAMES = ("background", "liver", "kidney", "spleen", "aorta")
SPLITS = ("train", "val", "test")
_MAX_SIZE = 256
_TEXTURE_SIGMAS = (0.012, 0.03, 0.08)
"""Correlation lengths of the fine, medium and coarse textures, as fractions of the field of view."""


NOMINAL_WINDOW_HU = (-175.0, 250.0)
"""The abdominal CT window that [0, 1] stands for (Synapse's, paper 003), so that budgets in HU
(``--eps 5HU``) mean on the phantoms what they mean on windowed CT."""


class Phantom3D(Dataset):
    """Synthetic 3D CT-like abdomens; labels 1 liver, 2 kidney, 3 spleen, 4 aorta.

    Intensities mimic the CT abdominal window −175…250 HU mapped to [0, 1] (declared as the
    bundle's ``intensity_window``): air 0, fat about 0.2,
    soft tissue about 0.45, liver, spleen and kidneys above it, the contrast-enhanced aorta
    about 0.85 and bone near 1. Positions, radii and levels are jittered per volume; the
    geometry is relative to the field of view, so ``image_size`` only changes the
    resolution. Every split holds whole cubic volumes.
    """

    name = "phantom3d"
    description = "Synthetic CT-like 3D abdomens: liver, kidney, spleen, aorta labels (generated, no files)"
    task = "segmentation"
    dims = 3
    needs_data_dir = False
    layout = ""

    @dataclass(frozen=True)
    class Settings:
        """Settings of ``phantom3d``.

        Attributes:
            image_size: Depth, height and width in voxels (16 to 256, a multiple of 8).
            n_train: Volumes in the training split.
            n_val: Volumes in the validation split.
            n_test: Volumes in the test split.
            noise: Standard deviation of the additive Gaussian noise on the [0, 1] scale.
        """

        image_size: int = 64
        n_train: int = 32
        n_val: int = 8
        n_test: int = 8
        noise: float = 0.03

        def validate(self) -> None:
            """Raise ValueError on a value out of range."""
            if not 16 <= self.image_size <= _MAX_SIZE or self.image_size % 8:
                raise ValueError(
                    f"image_size must be a multiple of 8 between 16 and {_MAX_SIZE}, got {self.image_size}"
                )
            for key in ("n_train", "n_val", "n_test"):
                if getattr(self, key) < 1:
                    raise ValueError(f"{key} must be at least 1, got {getattr(self, key)}")
            if not 0.0 <= self.noise <= 1.0:
                raise ValueError(f"noise must be in [0, 1], got {self.noise}")

    def load(self, data_dir: Path | None, seed: int) -> DatasetBundle:
        """Set up the three splits for ``seed`` (``data_dir`` is ignored); volumes are drawn on access."""
        settings: Phantom3D.Settings = self.settings
        try:
            settings.validate()
        except ValueError as error:
            raise UsageError(f"dataset {self.name!r}: {error}") from None
        counts = (settings.n_train, settings.n_val, settings.n_test)
        train, val, test = (
            PhantomSplit(settings, seed, split, n) for split, n in zip(SPLITS, counts, strict=True)
        )
        size = settings.image_size
        return DatasetBundle(
            train=train,
            val=val,
            test=test,
            class_names=CLASS_NAMES,
            input_shape=(1, size, size, size),
            task="segmentation",
            modality="synthetic-ct",
            intensity_window=NOMINAL_WINDOW_HU,
            intensity_unit="HU",
            fingerprint=fingerprint(self.name, settings, [], {"seed": seed, "generator": GENERATOR_VERSION}),
        )


class PhantomSplit(TorchDataset[tuple[torch.Tensor, torch.Tensor]]):
    """One split of ``phantom3d``: item ``i`` is drawn from its own generator when accessed.

    Nothing is cached, so memory stays flat whatever the size; a 64³ volume takes a few
    milliseconds. The same ``(settings, seed, split, index)`` always gives the same volume,
    whatever the order of access.
    """

    def __init__(self, settings: Phantom3D.Settings, seed: int, split: str, length: int) -> None:
        self.settings = settings
        self.seed = seed
        self.split = split
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for a split of {self.length} volumes")
        return generate_volume(self.settings, self.seed, self.split, index % self.length)


def generate_volume(
    settings: Phantom3D.Settings, seed: int, split: str, index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw volume ``index`` of ``split`` for ``seed``.

    Args:
        settings: Size and noise level.
        seed: The run's seed.
        split: ``train``, ``val`` or ``test``.
        index: Position of the volume in its split.

    Returns:
        ``(image, label)``: ``float32`` ``(1, D, H, W)`` in [0, 1] and ``int64`` ``(D, H, W)``
        class indices (:data:`CLASS_NAMES`).
    """
    entropy = [seed, SPLITS.index(split), index, *GENERATOR_VERSION.encode()]
    state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    generator = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
    return _draw(generator, settings.image_size, settings.noise)


class _Uniform:
    """Python floats drawn uniformly from a torch generator."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def __call__(self, low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=self.generator))


class _Canvas:
    """A volume being drawn: the body-frame grid, its textures, the body and the painted organs.

    Creating it draws the textures and then the body (an elliptical cylinder, slightly tapered
    along z, with a subcutaneous fat layer); the organs are then painted in turn with
    :meth:`paint`. Every random number comes from one generator, in a fixed order.

    Attributes:
        u: Uniform floats from the generator.
        z, x, y: Body-frame coordinates: x < 0 is the patient's right, y < 0 anterior, z > 0
            superior.
        fine, medium, coarse: Unit-variance textures (see :data:`_TEXTURE_SIGMAS`).
        half: Voxels per unit of the [-1, 1] field of view, for one-voxel soft edges.
        image: The intensities painted so far, ``(D, H, W)``.
        label: The class of every voxel, ``int64`` ``(D, H, W)``.
    """

    def __init__(self, generator: torch.Generator, size: int) -> None:
        self.u = _Uniform(generator)
        self.z, self.x, self.y = _grid(size)
        self.fine, self.medium, self.coarse = _textures(generator, size)
        self.half = size / 2
        u, x, y, z, half = self.u, self.x, self.y, self.z, self.half
        self.cx, self.cy = u(-0.04, 0.04), u(-0.04, 0.04)
        self.a = u(0.8, 0.9)
        self.b = self.a * u(0.62, 0.74)
        taper = 1.0 + u(-0.06, 0.06) * z
        d_body = torch.sqrt(((x - self.cx) / (self.a * taper)) ** 2 + ((y - self.cy) / (self.b * taper)) ** 2)
        body = _edge(d_body, self.b * half)
        d_inner = d_body / u(0.88, 0.93)
        self.inner = _edge(d_inner, self.b * half)
        fat, soft = u(0.18, 0.24), u(0.42, 0.48)
        medium, fine = self.medium, self.fine
        self.image = body * (fat + 0.012 * medium) + self.inner * (soft + 0.03 * medium + 0.015 * fine - fat)
        self.label = torch.zeros((size, size, size), dtype=torch.int64)
        self.inside = d_inner < 1.0

    def place(self, px: float, py: float) -> tuple[float, float]:
        """A point given in the frame of an average body, moved with this body."""
        return self.cx + px * self.a / 0.85, self.cy + py * self.b / 0.58

    def jitter(self, value: float, spread: float = 0.04) -> float:
        """``value`` moved at random by at most ``spread``."""
        return value + self.u(-spread, spread)

    def scale(self, value: float) -> float:
        """``value`` scaled at random by 0.85 to 1.15."""
        return value * self.u(0.85, 1.15)

    def paint(self, mask: torch.Tensor, hard: torch.Tensor, level: torch.Tensor | float, cls: int) -> None:
        """Blend ``level`` in where ``mask`` (inside the body) and label the ``hard`` voxels ``cls``."""
        self.image = self.image + mask * self.inner * (level - self.image)
        self.label[hard & self.inside] = cls


def _draw(generator: torch.Generator, size: int, noise: float) -> tuple[torch.Tensor, torch.Tensor]:
    canvas = _Canvas(generator, size)
    _draw_liver(canvas)
    _draw_spleen(canvas)
    _draw_kidneys(canvas)
    _draw_aorta(canvas)
    _draw_spine(canvas)
    image = canvas.image + noise * torch.randn((size, size, size), generator=generator)
    return image.clamp_(0.0, 1.0).unsqueeze(0), canvas.label


def _draw_liver(c: _Canvas) -> None:
    """Liver (1): a large right-sided ellipsoid joined by a smaller left lobe, smooth texture."""
    u, x, y, z = c.u, c.x, c.y, c.z
    lx, ly = c.place(c.jitter(-0.38), c.jitter(-0.05))
    radii = c.scale(0.34), c.scale(0.38), c.scale(0.45)
    d_liver = _ellipsoid(x, y, z, lx, ly, c.jitter(0.2, 0.1), *radii, u(-0.3, 0.3))
    mx, my = c.place(c.jitter(-0.06, 0.03), c.jitter(-0.2, 0.03))
    radii = c.scale(0.22), c.scale(0.13), c.scale(0.2)
    d_lobe = _ellipsoid(x, y, z, mx, my, c.jitter(0.3, 0.1), *radii, u(-0.3, 0.3))
    d_liver = torch.minimum(d_liver, d_lobe)
    c.paint(_edge(d_liver, 0.3 * c.half), d_liver < 1.0, u(0.54, 0.6) + 0.012 * c.coarse, 1)


def _draw_spleen(c: _Canvas) -> None:
    """Spleen (3): a medium ellipsoid on the other side, posterior, tilted, grainier."""
    sx, sy = c.place(c.jitter(0.5), c.jitter(0.2))
    radii = c.scale(0.13), c.scale(0.2), c.scale(0.25)
    d_spleen = _ellipsoid(c.x, c.y, c.z, sx, sy, c.jitter(0.3, 0.1), *radii, c.u(0.3, 0.8))
    c.paint(_edge(d_spleen, 0.18 * c.half), d_spleen < 1.0, c.u(0.49, 0.53) + 0.03 * c.medium, 3)


def _draw_kidneys(c: _Canvas) -> None:
    """Kidneys (2): two bean shapes (ellipsoid minus a medial hilum) with a brighter cortex."""
    u, x, y, z, half = c.u, c.x, c.y, c.z, c.half
    for side in (-1.0, 1.0):
        kx, ky = c.place(side * c.jitter(0.34, 0.03), c.jitter(0.3, 0.03))
        kz, rx = c.jitter(-0.2, 0.1), c.scale(0.11)
        d_kidney = _ellipsoid(x, y, z, kx, ky, kz, rx, c.scale(0.14), c.scale(0.24), side * u(-0.4, 0.1))
        d_hilum = _ellipsoid(x, y, z, kx - side * rx, ky, kz, rx * 0.55, rx * 0.55, rx * 0.8, 0.0)
        soft_mask = _edge(d_kidney, rx * half) * (1.0 - _edge(d_hilum, 0.5 * rx * half))
        level = u(0.6, 0.66) + 0.12 * d_kidney.clamp(max=1.0) ** 4 + 0.02 * c.fine
        c.paint(soft_mask, (d_kidney < 1.0) & (d_hilum >= 1.0), level, 2)


def _draw_aorta(c: _Canvas) -> None:
    """Aorta (4): a bright vertical tube in front of the spine, drifting a little along z."""
    ax, ay = c.place(c.jitter(0.05, 0.02), c.jitter(0.2, 0.02))
    radius = c.scale(0.055)
    d_aorta = torch.sqrt((c.x - ax - c.u(-0.03, 0.03) * c.z) ** 2 + (c.y - ay) ** 2) / radius
    c.paint(_edge(d_aorta, radius * c.half), d_aorta < 1.0, c.u(0.8, 0.88) + 0.01 * c.fine, 4)


def _draw_spine(c: _Canvas) -> None:
    """Spine, labelled background (a hard negative): vertebral bodies with darker discs, and
    behind them a continuous posterior arch.

    Cortical bone lies above the abdominal window, so it saturates at 1 as in windowed CT, and
    every axial slice reaches 1 (and air 0): the per-slice min-max renormalisation of VAFA's
    reference code then changes as little as on real scans.
    """
    u, x, y, z, half = c.u, c.x, c.y, c.z, c.half
    bx, by = c.place(c.jitter(0.0, 0.02), c.jitter(0.42, 0.02))
    radius = c.scale(0.1)
    d_spine = torch.sqrt((x - bx) ** 2 + (y - by) ** 2) / radius
    period, phase = u(0.22, 0.28), u(0.0, 2 * math.pi)
    discs = torch.cos(2 * math.pi * z / period + phase) > 0.75
    level = torch.where(discs, u(0.5, 0.58), u(0.95, 1.1)) + 0.02 * c.fine
    c.paint(_edge(d_spine, radius * half), d_spine < 1.0, level, 0)
    arch_radius = max(radius * 0.45, 1.5 / half)
    d_arch = torch.sqrt((x - bx) ** 2 + (y - by - 0.9 * radius) ** 2) / arch_radius
    c.paint(_edge(d_arch, arch_radius * half), d_arch < 1.0, u(1.15, 1.3), 0)


def _ellipsoid(
    x: torch.Tensor,
    y: torch.Tensor,
    z: torch.Tensor,
    cx: float,
    cy: float,
    cz: float,
    rx: float,
    ry: float,
    rz: float,
    theta: float,
) -> torch.Tensor:
    """Normalised radius of every voxel in an ellipsoid turned by ``theta`` in the axial plane."""
    dx, dy = x - cx, y - cy
    cos, sin = math.cos(theta), math.sin(theta)
    u = (dx * cos + dy * sin) / rx
    v = (dy * cos - dx * sin) / ry
    return torch.sqrt(u * u + v * v + ((z - cz) / rz) ** 2)


def _edge(d: torch.Tensor, radius_px: float) -> torch.Tensor:
    """Soft inside-mask from a normalised radius: a ramp about one voxel wide, 0.5 on the outline."""
    return ((1.0 - d) * radius_px + 0.5).clamp_(0.0, 1.0)


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Body-frame coordinates ``(z, x, y)`` of the voxel centres in [-1, 1], shaped to
    broadcast over ``(D, H, W)``; ``x`` and ``y`` decrease along their axes (RAS layout)."""
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2.0 - 1.0
    return coords.view(-1, 1, 1), -coords.view(1, -1, 1), -coords.view(1, 1, -1)


def _textures(generator: torch.Generator, size: int) -> list[torch.Tensor]:
    """Smooth Gaussian random fields with unit variance, one per scale of ``_TEXTURE_SIGMAS``.

    White noise is low-pass filtered in the Fourier domain (periodically); dividing by the
    filter's RMS gain gives exactly unit variance without a data-dependent normalisation.
    """
    spectrum = torch.fft.rfftn(torch.randn((size, size, size), generator=generator))
    return [torch.fft.irfftn(spectrum * gain, s=(size, size, size)) / rms for gain, rms in _filters(size)]


@lru_cache(maxsize=8)
def _filters(size: int) -> list[tuple[torch.Tensor, float]]:
    """Gaussian low-pass gains on the ``rfftn`` grid and their RMS over the full spectrum."""
    full = torch.fft.fftfreq(size)
    half = torch.fft.rfftfreq(size)
    f2 = full.view(-1, 1, 1) ** 2 + full.view(1, -1, 1) ** 2 + half.view(1, 1, -1) ** 2
    f2_full = full.view(-1, 1, 1) ** 2 + full.view(1, -1, 1) ** 2 + full.view(1, 1, -1) ** 2
    filters = []
    for fraction in _TEXTURE_SIGMAS:
        sigma = fraction * size
        gain = torch.exp(-2 * math.pi**2 * sigma**2 * f2)
        rms = float(torch.exp(-4 * math.pi**2 * sigma**2 * f2_full).mean().sqrt())
        filters.append((gain, rms))
    return filters
