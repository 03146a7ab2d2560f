"""Example grids: clean, adversarial and amplified perturbation, saved as PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

MIN_TILE = 96
"""Tiles smaller than this many pixels are enlarged by an integer factor."""

_PALETTE = (
    torch.tensor(
        [
            [0, 0, 0],
            [230, 25, 75],
            [60, 180, 75],
            [255, 225, 25],
            [0, 130, 200],
            [245, 130, 48],
            [145, 30, 180],
            [70, 240, 240],
            [240, 50, 230],
            [210, 245, 60],
            [250, 190, 212],
            [0, 128, 128],
            [220, 190, 255],
            [170, 110, 40],
        ],
        dtype=torch.float32,
    )
    / 255
)


def label_colors(labels: torch.Tensor) -> torch.Tensor:
    """Class maps ``(N, *spatial)`` → RGB images ``(N, 3, *spatial)`` in [0, 1] (background black).

    Classes beyond the 14-colour palette reuse its colours (class 0 stays black).
    """
    indices = labels.long().cpu()
    indices = torch.where(indices > 0, (indices - 1) % (len(_PALETTE) - 1) + 1, indices)
    return _PALETTE[indices].movedim(-1, 1)


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
    return image_rows(
        [x_clean[:count], x_adv[:count], perturbation_image(x_clean[:count], x_adv[:count])], path, pad=pad
    )


def perturbation_image(x_clean: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    """``0.5 + δ / (2·max|δ|)``: the perturbation scaled to the full range, mid-grey for no change."""
    delta = (x_adv - x_clean).float()
    scale = float(delta.abs().max())
    return 0.5 + delta / (2 * scale) if scale > 0 else torch.full_like(delta, 0.5)


def image_rows(rows: list[torch.Tensor], path: Path, count: int = 8, pad: int = 2) -> Path:
    """Save images as a grid with one row per tensor (the first ``count`` of each) as PNG.

    Rows are ``(N, 1 or 3, H, W)`` (or 3D, shown at the middle slice) in [0, 1] with the same
    spatial size; when any row has 3 channels, gray rows are shown in RGB. Returns ``path``.
    """
    if not rows:
        raise ValueError("no rows to draw")
    color = any(row.shape[1] == 3 for row in rows)
    tiles = [_to_display(row[:count].expand(-1, 3, *row.shape[2:]) if color else row[:count]) for row in rows]
    count = min(tile.shape[0] for tile in tiles)
    height, width = tiles[0].shape[1:3]
    shape = (len(tiles) * (height + pad) + pad, count * (width + pad) + pad) + ((3,) if color else ())
    canvas = np.full(shape, 255, dtype=np.uint8)
    for row_index, tile in enumerate(tiles):
        if tile.shape[1:3] != (height, width):
            raise ValueError("all rows must have the same image size")
        for column in range(count):
            top = pad + row_index * (height + pad)
            left = pad + column * (width + pad)
            canvas[top : top + height, left : left + width] = tile[column]
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(canvas)
    scale = max(1, MIN_TILE // max(height, width))
    if scale > 1:  # small images (32x32) are enlarged, pixel for pixel, to be readable in the UI
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)
    picture.save(path)
    return path
