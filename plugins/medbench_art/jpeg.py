"""Defense ``jpeg``: JPEG compression in front of the model (ART's ``JpegCompression``)."""

from __future__ import annotations

from dataclasses import dataclass

from art.defences.preprocessor import JpegCompression

from medbench.api import DefenseContext
from medbench.api.toolkit import DefensePreprocessor
from medbench_art._preprocessing import Gradient, NumpyDefence, PreprocessingDefense, check_gradient


@dataclass(frozen=True)
class JpegSettings:
    """JPEG settings.

    Attributes:
        quality: JPEG quality, 1–95 (50, ART's default; Dziugaite et al. 2016 use 75).
        gradient: ``bpda``: attacks backpropagate through the identity (the standard adaptive
            attack); ``blocked``: no gradient through the compression (the naive attack that
            BPDA beats; for comparisons).
    """

    quality: int = 50
    gradient: Gradient = "bpda"

    def validate(self) -> None:
        if not 1 <= self.quality <= 95:
            raise ValueError("quality must be in [1, 95]")
        check_gradient(self.gradient)


class Jpeg(PreprocessingDefense):
    """JPEG compression of the input (not differentiable: attacks use BPDA)."""

    name = "jpeg"
    description = "JPEG compression in front of the standard model (ART JpegCompression; BPDA)"
    Settings = JpegSettings

    def preprocessor(self, ctx: DefenseContext) -> DefensePreprocessor:
        s: JpegSettings = self.settings
        art = JpegCompression(clip_values=(0.0, 1.0), quality=s.quality, channels_first=True, apply_fit=False)
        return NumpyDefence(art, ctx.device, s.gradient, randomized=False)
