"""What ART's preprocessing defences share as medbench defenses: the standard-trained model
(the rest of the chain) with the defence in front of it, and a declared gradient.

The defences are :class:`medbench.api.toolkit.DefensePreprocessor` objects: each says whether
it is differentiable and whether it is randomised, so that attacks use BPDA and EOT where needed.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, Literal

import numpy as np
import torch

from medbench.api import CLASSIFICATION, DefendedModel, Defense, DefenseContext
from medbench.api.toolkit import DefensePreprocessor, GradientMode

GRADIENT_MODES: tuple[GradientMode, ...] = ("bpda", "blocked")
Gradient = Literal["bpda", "blocked"]


def check_gradient(gradient: str) -> None:
    if gradient not in GRADIENT_MODES:
        raise ValueError(f"gradient must be one of {', '.join(GRADIENT_MODES)}, got {gradient!r}")


class PreprocessingDefense(Defense):
    """Base: ``model(defence(x))`` with the model of the rest of the chain (standard training)."""

    kind = "preprocessing"
    tasks = CLASSIFICATION
    trainable = False

    @abstractmethod
    def preprocessor(self, ctx: DefenseContext) -> DefensePreprocessor:
        """The defence, on the context's device."""

    def build(self, ctx: DefenseContext) -> DefendedModel:
        base = ctx.base()
        preprocessors = [self.preprocessor(ctx), *base.preprocessors]
        return DefendedModel(base.model, base.normalization, preprocessors, dict(base.modules))

    def visualize(self, defended: DefendedModel, x: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        defence = defended.preprocessors[0]
        return {"preprocessed": [x, defence.transform(x).clamp(0.0, 1.0)]}


class NumpyDefence(DefensePreprocessor):
    """An ART NumPy preprocessor (JPEG, total-variation minimisation) as a torch defence.

    The defence itself has no torch implementation, so each call copies the batch to the
    host and back; attacks differentiate through it with BPDA.
    """

    differentiable = False

    def __init__(
        self, art_defence: Any, device: torch.device, gradient: GradientMode, randomized: bool
    ) -> None:
        super().__init__(device, gradient)
        self.art_defence = art_defence
        self.randomized = randomized  # type: ignore[misc]

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().cpu().numpy().astype(np.float32, copy=False)
        result, _ = self.art_defence(array)
        return torch.from_numpy(np.asarray(result, dtype=np.float32)).to(x.device)
