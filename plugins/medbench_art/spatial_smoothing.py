"""Defense ``spatial-smoothing``: a median filter (Xu et al., 2018; ART's ``SpatialSmoothing``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medbench.api import DefenseContext
from medbench.api.toolkit import DefensePreprocessor
from medbench_art._preprocessing import PreprocessingDefense


class MedianSmoothing(DefensePreprocessor):
    """k×k median filter per channel with symmetric padding: ART's ``SpatialSmoothing``
    (``scipy.ndimage.median_filter``, mode ``reflect``) on the device. The median passes the
    gradient to the selected pixel, so it is differentiable almost everywhere and attacks
    differentiate through it. (ART's own PyTorch version needs ``kornia``.)"""

    differentiable = True

    def __init__(self, window_size: int, device: torch.device) -> None:
        super().__init__(device)
        self.window_size = window_size

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        size = self.window_size
        padded = _symmetric_pad(_symmetric_pad(x, size // 2, -1), size // 2, -2)
        patches = padded.unfold(-2, size, 1).unfold(-2, size, 1)
        return patches.reshape(*patches.shape[:-2], -1).median(dim=-1).values


def _symmetric_pad(x: torch.Tensor, pad: int, dim: int) -> torch.Tensor:
    """Pad ``dim`` by mirroring with the edge repeated (scipy's ``reflect``, NumPy's ``symmetric``)."""
    if pad == 0:
        return x
    before = x.narrow(dim, 0, pad).flip(dim)
    after = x.narrow(dim, x.shape[dim] - pad, pad).flip(dim)
    return torch.cat([before, x, after], dim=dim)


@dataclass(frozen=True)
class SpatialSmoothingSettings:
    """Spatial-smoothing settings.

    Attributes:
        window_size: Side of the median window (3, ART's default; odd, 3–7 in Xu et al.).
    """

    window_size: int = 3

    def validate(self) -> None:
        if self.window_size < 2 or self.window_size % 2 == 0:
            raise ValueError("window_size must be an odd number >= 3")


class SpatialSmoothing(PreprocessingDefense):
    """Median filtering of the input."""

    name = "spatial-smoothing"
    description = "Median filter in front of the standard model (ART SpatialSmoothing, on the device)"
    Settings = SpatialSmoothingSettings

    def preprocessor(self, ctx: DefenseContext) -> DefensePreprocessor:
        return MedianSmoothing(self.settings.window_size, ctx.device)
