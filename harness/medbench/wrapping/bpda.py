"""Preprocessing defences that attacks must see through: BPDA and EOT.

A preprocessing defence declares two facts (DESIGN.md §7):

* ``differentiable``: whether autograd through :meth:`DefensePreprocessor.transform` gives a
  useful gradient. When it does not (JPEG, bit-depth reduction, total-variation
  minimisation), attacks use **BPDA** (Athalye et al., 2018): the forward pass is the real
  defence, the backward pass that of :meth:`DefensePreprocessor.approximation` (the identity
  unless the defence declares a better differentiable stand-in). The value and the gradient
  are combined in one straight-through expression, so ART's PyTorch attack paths stay on the
  device and need no special case.
* ``randomized``: whether two calls on the same input differ. Gradients of a randomised
  defence are then averaged over several draws (**EOT**, Athalye et al., 2018) by
  :class:`EOTPyTorchClassifier`.

``gradient="blocked"`` gives attacks no gradient through a non-differentiable defence at all:
the naive evaluation that BPDA exists to beat, kept for comparisons.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
from art.defences.preprocessor.preprocessor import PreprocessorPyTorch
from art.estimators.classification import PyTorchClassifier

GradientMode = Literal["bpda", "blocked"]


class DefensePreprocessor(PreprocessorPyTorch):
    """An ART framework-native preprocessor that declares how attacks get gradients through it.

    Subclasses implement :meth:`transform` and set the class attributes.

    Attributes:
        differentiable: True when autograd through :meth:`transform` is meaningful.
        randomized: True when :meth:`transform` draws random numbers (EOT applies).
        gradient: For non-differentiable defences: ``bpda`` (backward through
            :meth:`approximation`) or ``blocked`` (no gradient; naive attacks).
    """

    differentiable: ClassVar[bool] = True
    randomized: ClassVar[bool] = False

    def __init__(self, device: torch.device, gradient: GradientMode = "bpda") -> None:
        super().__init__(
            device_type="gpu" if device.type == "cuda" else "cpu", apply_fit=False, apply_predict=True
        )
        if gradient not in ("bpda", "blocked"):
            raise ValueError(f"gradient must be 'bpda' or 'blocked', got {gradient!r}")
        self.gradient = gradient

    @abstractmethod
    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """The defence applied to a batch in [0, 1]; returns a batch of the same shape in [0, 1]."""

    def approximation(self, x: torch.Tensor) -> torch.Tensor:
        """BPDA's differentiable stand-in for :meth:`transform`: the identity by default."""
        return x

    def forward(self, x: torch.Tensor, y: Any = None) -> tuple[torch.Tensor, Any]:
        if self.differentiable:
            return self.transform(x), y
        with torch.no_grad():
            value = self.transform(x.detach())
        if not x.requires_grad:
            return value, y
        if self.gradient == "blocked":
            # connected to the input, with a zero gradient (ART refuses a missing one)
            return value + 0.0 * x, y
        stand_in = self.approximation(x)
        # value forwards, the stand-in's gradient backwards
        return stand_in + (value - stand_in).detach(), y

    def _check_params(self) -> None:
        pass


def randomized(preprocessors: Sequence[Any]) -> bool:
    """Whether any of the preprocessors draws random numbers."""
    return any(getattr(p, "randomized", False) for p in preprocessors)


class EOTPyTorchClassifier(PyTorchClassifier):
    """A ``PyTorchClassifier`` whose input gradients average ``eot_samples`` draws of its
    randomised preprocessing (Expectation over Transformation).

    Every gradient-based attack in ART calls :meth:`loss_gradient` (or
    :meth:`class_gradient`), so all of them become EOT attacks without knowing it.
    """

    def __init__(self, *args: Any, eot_samples: int, **kwargs: Any) -> None:
        if eot_samples < 1:
            raise ValueError(f"eot_samples must be >= 1, got {eot_samples}")
        super().__init__(*args, **kwargs)
        self.eot_samples = eot_samples

    def loss_gradient(self, x: Any, y: Any, training_mode: bool = False, **kwargs: Any) -> Any:
        total = super().loss_gradient(x, y, training_mode=training_mode, **kwargs)
        for _ in range(self.eot_samples - 1):
            total = total + super().loss_gradient(x, y, training_mode=training_mode, **kwargs)
        return total / self.eot_samples

    def class_gradient(self, x: Any, label: Any = None, training_mode: bool = False, **kwargs: Any) -> Any:
        total = super().class_gradient(x, label=label, training_mode=training_mode, **kwargs)
        for _ in range(self.eot_samples - 1):
            total = total + super().class_gradient(x, label=label, training_mode=training_mode, **kwargs)
        return total / self.eot_samples
