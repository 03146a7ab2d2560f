"""Example grids: clean, adversarial and amplified perturbation, saved as PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

MIN_TILE = 96
"""Tiles smaller than this many pixels are enlarged by an integer factor."""


def _to_display(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) or (N, C, D, H, W) in [0, 1] → (N, H, W) or (N, H, W, 3) uint8 (middle slice in 3D)."""
    if images.ndim == 5:
        images = images[:, :, images.shape[2] // 2]
    array = images.detach().float().cpu().clamp(0, 1).numpy()
    array = array.transpose(0, 2, 3, 1) if array.shape[1] == 3 else array[:, 0]
    return (array * 255 + 0.5).astype(np.uint8)


def example_grid(
    x_clean: torch.Tensor, x_adv: torch.Tensor, path: Path, count: int = 8, pad: int = 2
) -> Path:
    """Save a 3-row grid: clean inputs, adversarial inputs, perturbation scaled to full range.

    The perturbation row shows ``0.5 + δ / (2·max|δ|)`` (mid-grey is no change), so that
    even an 8/255 perturbation is visible. Returns ``path``.
    """
    count = min(count, x_clean.shape[0])
    delta = (x_adv[:count] - x_clean[:count]).float()
    scale = float(delta.abs().max())
    perturbation = 0.5 + delta / (2 * scale) if scale > 0 else torch.full_like(delta, 0.5)
    rows = [_to_display(x_clean[:count]), _to_display(x_adv[:count]), _to_display(perturbation)]
    height, width = rows[0].shape[1:3]
    channels = 3 if rows[0].ndim == 4 else 1
    shape = (3 * (height + pad) + pad, count * (width + pad) + pad) + ((3,) if channels == 3 else ())
    canvas = np.full(shape, 255, dtype=np.uint8)
    for row_index, row in enumerate(rows):
        for column in range(count):
            top = pad + row_index * (height + pad)
            left = pad + column * (width + pad)
            canvas[top : top + height, left : left + width] = row[column]
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(canvas)
    scale = max(1, MIN_TILE // max(height, width))
    if scale > 1:  # small images (32x32) are enlarged, pixel for pixel, to be readable in the UI
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)
    picture.save(path)
    return path
