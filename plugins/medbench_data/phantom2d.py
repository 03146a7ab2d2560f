"""``phantom2d``: synthetic CT-like cross-sections, with or without a lesion.

Every image is generated on the fly from the seed with vectorised numpy: a body outline
with a subcutaneous fat layer, a few organs with their own levels and textures, an
optional lesion, a smooth multiplicative bias field and acquisition noise. No file and
no network are needed, which makes it the dataset of the smoke suite and of the tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from medbench.api import Dataset, DatasetBundle
from medbench.api.toolkit import UsageError
from medbench_data._common import TensorSplit, fingerprint, stratified_split, validate_fractions

GENERATOR_VERSION = 1
"""Bumped whenever the generator changes the images it draws for a given seed."""

CLASS_NAMES = ("no_lesion", "lesion")
_CHUNK = 256
MAX_PIXELS = 2**32
"""The most pixels of all phantoms together (16 GiB of float32): ``n_samples × image_size²``."""
"""Images generated at once: large enough to vectorise, small enough to stay in cache."""
_N_ORGANS = 3
_TEXTURE_CELLS = (24, 12, 6)
"""Scales of the organ textures: noise cells across the field of view (fine to coarse)."""
_RIM_FRACTION = 0.2
"""Share of rim-enhancing lesions (a bright or dark ring around a fainter core)."""
_BodyFrame = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""Per-image body ellipses: centre ``cx``, ``cy``, half-axes ``a``, ``b`` and angle ``theta``."""


class Phantom2D(Dataset):
    """Synthetic 2D CT-like phantoms; the label says whether a lesion is present.

    Classes are balanced (``n_samples // 2`` lesions). Lesions vary in size, shape
    (solid, heterogeneous, rim-enhancing), edge sharpness and contrast (log-uniform over
    a factor of 9 by default, down to faint ones); about a third are darker than the
    tissue around them. The defaults are calibrated so that the task is neither trivial
    nor hopeless: the small reference CNN reaches about 83-91% test accuracy after 5
    epochs (test AUC about 0.97), never 100%. Geometry is relative to the field of view,
    so ``image_size`` only changes the resolution. Splits are stratified by class.
    """

    name = "phantom2d"
    description = "Synthetic CT-like 2D cross-sections, lesion present or not (generated, no files)"
    task = "classification"
    needs_data_dir = False
    layout = ""

    @dataclass(frozen=True)
    class Settings:
        """Settings of ``phantom2d``.

        Attributes:
            image_size: Height and width in pixels (16 to 224).
            n_samples: Number of images over all three splits.
            val_fraction: Share of the samples in the validation split.
            test_fraction: Share of the samples in the test split.
            lesion_contrast: Median absolute lesion contrast on the [0, 1] scale (before
                texture, bias field and noise).
            contrast_spread: Each lesion's contrast is drawn log-uniformly between
                ``lesion_contrast / contrast_spread`` and ``lesion_contrast * contrast_spread``.
            hypo_fraction: Share of lesions darker than the tissue around them.
            lesion_radius_min: Smallest lesion radius, as a fraction of the image width.
            lesion_radius_max: Largest lesion radius, as a fraction of the image width.
            noise_std: Typical standard deviation of the acquisition noise (each image
                draws its own between 0.6 and 1.4 times it).
            bias_strength: Amplitude of the smooth multiplicative bias field.
        """

        image_size: int = 64
        n_samples: int = 3000
        val_fraction: float = 0.15
        test_fraction: float = 0.15
        lesion_contrast: float = 0.5
        contrast_spread: float = 3.0
        hypo_fraction: float = 0.35
        lesion_radius_min: float = 0.04
        lesion_radius_max: float = 0.1
        noise_std: float = 0.02
        bias_strength: float = 0.2

        def validate(self) -> None:
            """Raise ValueError on a value out of range."""
            if not 16 <= self.image_size <= 224:
                raise ValueError(f"image_size must be between 16 and 224, got {self.image_size}")
            if self.n_samples < 10:
                raise ValueError(f"n_samples must be at least 10, got {self.n_samples}")
            if self.n_samples * self.image_size**2 > MAX_PIXELS:
                raise ValueError(
                    f"n_samples × image_size² must be at most {MAX_PIXELS} (16 GiB of images), "
                    f"got {self.n_samples} × {self.image_size}²"
                )
            validate_fractions(self.val_fraction, self.test_fraction)
            if not 0.0 < self.lesion_contrast <= 1.0:
                raise ValueError(f"lesion_contrast must be in (0, 1], got {self.lesion_contrast}")
            if self.contrast_spread < 1.0:
                raise ValueError(f"contrast_spread must be at least 1, got {self.contrast_spread}")
            if not 0.0 <= self.hypo_fraction <= 1.0:
                raise ValueError(f"hypo_fraction must be in [0, 1], got {self.hypo_fraction}")
            if not 0.0 < self.lesion_radius_min <= self.lesion_radius_max <= 0.25:
                raise ValueError(
                    "need 0 < lesion_radius_min <= lesion_radius_max <= 0.25, got "
                    f"{self.lesion_radius_min} and {self.lesion_radius_max}"
                )
            if self.noise_std < 0.0 or self.bias_strength < 0.0:
                raise ValueError("noise_std and bias_strength must not be negative")

    def load(self, data_dir: Path | None, seed: int) -> DatasetBundle:
        """Generate the phantoms for ``seed`` and split them (``data_dir`` is ignored)."""
        settings: Phantom2D.Settings = self.settings
        try:
            settings.validate()
        except ValueError as error:
            raise UsageError(f"dataset {self.name!r}: {error}") from None
        images, labels = generate_phantoms(settings, seed)
        splits = stratified_split(labels, settings.val_fraction, settings.test_fraction, seed)
        images_t = torch.from_numpy(images).unsqueeze(1)
        labels_t = torch.from_numpy(labels)
        train, val, test = (TensorSplit(images_t[idx], labels_t[idx]) for idx in splits)
        # The images are a function of (settings, seed, generator version); hashing their float
        # bytes would tie the fingerprint to the CPU's last-bit rounding (BLAS, SIMD exp/cos),
        # so the exact integer outputs (labels, splits) stand for them instead.
        digest = fingerprint(
            self.name,
            settings,
            [labels, *splits],
            {"seed": seed, "generator": GENERATOR_VERSION, "numpy": np.__version__.split(".")[0]},
        )
        return DatasetBundle(
            train=train,
            val=val,
            test=test,
            class_names=CLASS_NAMES,
            input_shape=(1, settings.image_size, settings.image_size),
            task="classification",
            modality="synthetic-ct",
            fingerprint=digest,
        )


def generate_phantoms(settings: Phantom2D.Settings, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``settings.n_samples`` phantoms, half of them with a lesion.

    Args:
        settings: Size, count and generation knobs.
        seed: Seeds everything; the same seed gives the same arrays.

    Returns:
        ``(images, labels)``: ``float32`` ``(N, H, W)`` in [0, 1] and ``int64`` ``(N,)``.
    """
    rng = np.random.default_rng([seed, GENERATOR_VERSION])
    n = settings.n_samples
    labels = rng.permutation(np.arange(n) % 2).astype(np.int64)
    images = np.empty((n, settings.image_size, settings.image_size), dtype=np.float32)
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        images[start:stop] = _draw_chunk(rng, labels[start:stop].astype(bool), settings)
    return images, labels


class _Params:
    """Uniform draws of one parameter for every image of a chunk, shaped to broadcast."""

    def __init__(self, rng: np.random.Generator, n: int) -> None:
        self.rng = rng
        self.n = n

    def __call__(self, low: float, high: float) -> np.ndarray:
        return self.rng.uniform(low, high, (self.n, 1, 1)).astype(np.float32)


def _draw_chunk(rng: np.random.Generator, lesion: np.ndarray, s: Phantom2D.Settings) -> np.ndarray:
    """Draw ``len(lesion)`` images; ``lesion[i]`` says whether image ``i`` has a lesion."""
    n, size = len(lesion), s.image_size
    draw = _Params(rng, n)
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    x, y = coords[None, None, :], coords[None, :, None]  # the field of view spans [-1, 1]
    textures = [_smooth_noise(rng, n, size, cells) for cells in _TEXTURE_CELLS]

    # body: an ellipse with a subcutaneous fat layer, on a dark background
    cx, cy, theta = draw(-0.06, 0.06), draw(-0.06, 0.06), draw(-0.35, 0.35)
    a = draw(0.72, 0.92)
    b = a * draw(0.62, 0.85)
    d_body = _ellipse(x, y, cx, cy, a, b, theta)
    body = _edge(d_body, b * size / 2)
    inner = _edge(d_body / draw(0.86, 0.94), b * size / 2)
    fat, soft = draw(0.22, 0.3), draw(0.42, 0.52)
    image = 0.02 + body * (fat - 0.02) + inner * (soft + 0.025 * textures[1] - fat)

    # organs: one per sector of the body, elongated along it, each with its level and texture
    phi0 = draw(0.0, 2 * math.pi)
    for k in range(_N_ORGANS):
        phi = phi0 + 2 * math.pi * k / _N_ORGANS + draw(-0.25, 0.25)
        ox, oy = _body_point(cx, cy, a, b, theta, draw(0.35, 0.5), phi)
        oa = draw(0.22, 0.32)
        ob = oa * draw(0.55, 0.85)
        d_organ = _ellipse(x, y, ox, oy, oa, ob, phi + theta + math.pi / 2 + draw(-0.3, 0.3))
        organ = _edge(d_organ, ob * size / 2) * inner
        offset = np.where(draw(0.0, 1.0) < 0.5, np.float32(-1), np.float32(1)) * draw(0.04, 0.12)
        level = soft + offset + draw(0.01, 0.07) * textures[k % len(textures)]
        image += organ * (level - image)

    has = np.flatnonzero(lesion)
    if len(has):
        body_frame = (cx[has], cy[has], a[has], b[has], theta[has])
        image[has] += _lesions(np.random.default_rng(rng.integers(2**63)), len(has), s, x, y, body_frame)

    image *= np.clip(1.0 + s.bias_strength / 2 * _smooth_noise(rng, n, size, 3), 0.5, 1.5)
    image += s.noise_std * draw(0.6, 1.4) * rng.standard_normal((n, size, size), dtype=np.float32)
    return np.clip(image, 0.0, 1.0, out=image)


def _lesions(
    rng: np.random.Generator,
    n: int,
    s: Phantom2D.Settings,
    x: np.ndarray,
    y: np.ndarray,
    body: _BodyFrame,
) -> np.ndarray:
    """``n`` additive lesion images, inside the bodies whose frames ``body`` gives."""
    size = s.image_size
    draw = _Params(rng, n)
    lx, ly = _inside_body(draw, *body, 0.72)
    radius = 2.0 * np.exp(draw(math.log(s.lesion_radius_min), math.log(s.lesion_radius_max)))
    la, lb = radius * draw(0.8, 1.25), radius * draw(0.8, 1.25)
    radius_px = np.minimum(la, lb) * size / 2
    d = _ellipse(x, y, lx, ly, la, lb, draw(0.0, math.pi))
    profile = _edge(d, radius_px * draw(0.25, 1.0))  # fuzzy to crisp edges
    kind = draw(0.0, 1.0)
    rim = profile - 0.7 * _edge(d / 0.55, radius_px)
    profile = np.where(kind < _RIM_FRACTION, rim, profile)
    heterogeneity = np.where(kind > 0.55, draw(0.2, 0.8), draw(0.0, 0.15))
    profile *= 1.0 + heterogeneity * _smooth_noise(rng, n, size, _TEXTURE_CELLS[0])
    spread = math.log(s.contrast_spread)
    contrast = s.lesion_contrast * np.exp(draw(-spread, spread))
    sign = np.where(draw(0.0, 1.0) < s.hypo_fraction, np.float32(-1), np.float32(1))
    return (sign * contrast * profile).astype(np.float32)


def _inside_body(
    draw: _Params,
    cx: np.ndarray,
    cy: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    theta: np.ndarray,
    max_radius: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Random points inside the body ellipse, up to ``max_radius`` of its half-axes."""
    return _body_point(cx, cy, a, b, theta, max_radius * np.sqrt(draw(0.0, 1.0)), draw(0.0, 2 * math.pi))


def _body_point(
    cx: np.ndarray,
    cy: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    theta: np.ndarray,
    r: np.ndarray,
    phi: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The point at polar coordinates ``(r, phi)`` of the body frame (``r = 1`` on its outline)."""
    u, v = r * np.cos(phi) * a, r * np.sin(phi) * b
    cos, sin = np.cos(theta), np.sin(theta)
    return cx + u * cos - v * sin, cy + u * sin + v * cos


def _ellipse(
    x: np.ndarray,
    y: np.ndarray,
    cx: np.ndarray,
    cy: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    theta: np.ndarray,
) -> np.ndarray:
    """Normalised radius of every pixel in a rotated ellipse (1 on its outline)."""
    dx, dy = x - cx, y - cy
    cos, sin = np.cos(theta), np.sin(theta)
    u = (dx * cos + dy * sin) / a
    v = (dy * cos - dx * sin) / b
    return np.sqrt(u * u + v * v)


def _edge(d: np.ndarray, radius_px: np.ndarray) -> np.ndarray:
    """Soft inside-mask of a shape from its normalised radius: a ramp about one pixel wide."""
    return np.clip((1.0 - d) * radius_px + 0.5, 0.0, 1.0)


def _smooth_noise(rng: np.random.Generator, n: int, size: int, cells: int) -> np.ndarray:
    """Smooth Gaussian noise with unit variance per pixel, ``cells`` blobs across the image."""
    weights, norm = _interpolation(size, cells)
    coarse = rng.standard_normal((n, cells, cells), dtype=np.float32)
    return (weights @ coarse @ weights.T) / norm


@lru_cache(maxsize=32)
def _interpolation(size: int, cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian interpolation matrix ``(size, cells)`` and the per-pixel std it produces."""
    pixels = (np.arange(size) + 0.5) / size
    centres = (np.arange(cells) + 0.5) / cells
    width = 0.8 / cells
    weights = np.exp(-0.5 * ((pixels[:, None] - centres[None, :]) / width) ** 2)
    weights[weights < 1e-6] = 0.0  # denormal float32 weights would slow the products down a lot
    row_norm = np.sqrt((weights**2).sum(axis=1))
    return weights.astype(np.float32), np.outer(row_norm, row_norm).astype(np.float32)
