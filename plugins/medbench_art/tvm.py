"""Defense ``tvm``: total-variation minimisation (Guo et al., 2018; ART's ``TotalVarMin``)."""

from __future__ import annotations

from dataclasses import dataclass

from art.defences.preprocessor import TotalVarMin

from medbench.api import DefenseContext
from medbench.api.toolkit import DefensePreprocessor
from medbench_art._preprocessing import Gradient, NumpyDefence, PreprocessingDefense, check_gradient


@dataclass(frozen=True)
class TVMSettings:
    """Total-variation minimisation settings (ART's defaults).

    Attributes:
        prob: Probability that a pixel is kept as a constraint (a random mask: the defence
            is randomised, so gradient attacks average over draws, EOT).
        lamb: Weight of the total-variation term.
        norm: Norm of the total variation (1 or 2).
        max_iter: L-BFGS-B iterations per image.
        gradient: ``bpda`` (identity backward) or ``blocked`` (no gradient; naive attacks).
    """

    prob: float = 0.3
    lamb: float = 0.5
    norm: int = 2
    max_iter: int = 10
    gradient: Gradient = "bpda"

    def validate(self) -> None:
        if not 0 < self.prob <= 1:
            raise ValueError("prob must be in (0, 1]")
        if self.lamb < 0:
            raise ValueError("lamb must be >= 0")
        if self.norm not in (1, 2):
            raise ValueError("norm must be 1 or 2")
        if self.max_iter < 1:
            raise ValueError("max_iter must be >= 1")
        check_gradient(self.gradient)


class TotalVariationMinimization(PreprocessingDefense):
    """Reconstructs the input from a random subset of its pixels with minimal total variation."""

    name = "tvm"
    description = "Total-variation minimisation of a random pixel subset (ART TotalVarMin; BPDA + EOT)"
    Settings = TVMSettings

    def preprocessor(self, ctx: DefenseContext) -> DefensePreprocessor:
        s: TVMSettings = self.settings
        art = TotalVarMin(
            prob=s.prob,
            norm=s.norm,
            lamb=s.lamb,
            max_iter=s.max_iter,
            clip_values=(0.0, 1.0),
            apply_fit=False,
        )
        return NumpyDefence(art, ctx.device, s.gradient, randomized=True)
