"""The colorized classifier: a colorization module T in front of a backbone (encoder E and head C).

Paper 002 names the parts T (colorization), E (feature encoder) and C (classifier). Here
``colorizer`` is T and ``backbone`` is the model plugin's module, E and C together; C is the
backbone's submodule that the model plugin reports as its head. Both are submodules, so
one ``state_dict`` (keys ``colorizer.*`` and ``backbone.*``) holds everything.

Frozen parts stay frozen in both senses: their parameters have ``requires_grad=False`` and
:meth:`ColorizedClassifier.train` keeps them in eval mode, so that their BatchNorm running
statistics (and dropout) do not change while the rest trains.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
from torch import nn

Part = Literal["colorizer", "backbone"]


def submodule_name(root: nn.Module, target: nn.Module) -> str:
    """The dotted name of ``target`` inside ``root``.

    Raises:
        ValueError: When ``target`` is not a proper submodule of ``root``.
    """
    for name, module in root.named_modules():
        if module is target and name:
            return name
    raise ValueError("the head is not a submodule of the backbone")


class ColorizedClassifier(nn.Module):
    """``backbone(colorizer(x))``: the colorization module's raw output goes straight into the backbone."""

    def __init__(self, colorizer: nn.Module, backbone: nn.Module, head: nn.Module) -> None:
        """Assemble the model.

        Args:
            colorizer: Maps the (normalised) input to 3 channels of the same size.
            backbone: The classifier taking 3-channel input.
            head: The backbone's classification head (a submodule of ``backbone``).
        """
        super().__init__()
        self.colorizer = colorizer
        self.backbone = backbone
        self.head_name = submodule_name(backbone, head)
        """Dotted name of the head inside the backbone (a name, so the head is not registered twice)."""
        self.frozen: tuple[Part, ...] = ()

    @property
    def head(self) -> nn.Module:
        """The classification head C (always trainable)."""
        return self.backbone.get_submodule(self.head_name)

    def head_keys(self) -> set[str]:
        """The backbone's ``state_dict`` keys that belong to the head."""
        prefix = f"{self.head_name}."
        return {key for key in self.backbone.state_dict() if key.startswith(prefix)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.colorizer(x))

    def freeze(self, parts: Iterable[Part]) -> ColorizedClassifier:
        """Freeze ``parts`` (except the head) and unfreeze everything else.

        Args:
            parts: ``colorizer`` and/or ``backbone``; an empty iterable unfreezes everything.
        """
        self.frozen = tuple(parts)
        head = {id(p) for p in self.head.parameters()}
        for name, module in (("colorizer", self.colorizer), ("backbone", self.backbone)):
            for parameter in module.parameters():
                parameter.requires_grad_(name not in self.frozen or id(parameter) in head)
        return self.train(self.training)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters that are not frozen."""
        return [p for p in self.parameters() if p.requires_grad]

    def train(self, mode: bool = True) -> ColorizedClassifier:
        """Set the training mode, keeping frozen parts (but not the head) in eval mode."""
        super().train(mode)
        if mode and self.frozen:
            for part in self.frozen:
                self.get_submodule(part).eval()
            self.head.train()
        return self
