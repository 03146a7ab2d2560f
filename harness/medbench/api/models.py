"""Model plugins: factories of ``torch.nn.Module`` objects, and their input normalisation."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from torch import nn

from medbench.api.plugin import CLASSIFICATION, Plugin, Task

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and std that a model expects its [0, 1] input to be normalised with."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def for_channels(self, channels: int) -> Normalization:
        """Broadcast a single-channel normalisation to ``channels`` channels (or check it fits)."""
        if len(self.mean) == channels:
            return self
        if len(self.mean) == 1:
            return Normalization(self.mean * channels, self.std * channels)
        raise ValueError(f"normalisation has {len(self.mean)} channels, input has {channels}")


class Model(Plugin, ABC):
    """A model plugin: a factory of ``torch.nn.Module`` objects.

    The module takes **normalised** input (see :meth:`normalization`) and returns logits:
    ``(N, num_classes)`` for classification, ``(N, num_classes, *spatial)`` for segmentation.
    """

    tasks: ClassVar[frozenset[str]] = CLASSIFICATION
    dims: ClassVar[int] = 2

    @property
    def kind_label(self) -> str:
        return "model"

    def normalization(self, in_channels: int) -> Normalization:
        """Mean and std the model expects; the harness applies them (as ART preprocessing)."""
        return Normalization((0.5,) * in_channels, (0.25,) * in_channels)

    def head(self, module: nn.Module) -> nn.Module:
        """The classification head of a module this plugin built (the final classifier).

        Defenses that train or replace only the head (deep colorization's ``last-layer``
        stage) or read the features entering it (the denoising CNN's neighbor loss) use it.
        The default finds an attribute ``fc``, ``classifier`` or ``head``, or else the last
        child of an ``nn.Sequential``; override it when the head lives elsewhere.

        Raises:
            UsageError: When the head cannot be found.
        """
        for attribute in ("fc", "classifier", "head"):
            candidate = getattr(module, attribute, None)
            if isinstance(candidate, nn.Module):
                return candidate
        if isinstance(module, nn.Sequential) and len(module) > 0:
            return module[-1]
        from medbench.errors import UsageError

        raise UsageError(
            f"model {self.name!r} does not expose its classification head "
            "(no fc/classifier/head attribute); override Model.head"
        )

    def roi_size(self) -> tuple[int, ...] | None:
        """Spatial size of the patches the module is built for, or None when any size works.

        Segmentation networks with a fixed input size (UNETR) return it: the harness then
        trains on patches of that size, attacks volumes patch by patch and evaluates them
        with sliding-window inference. The default is None.
        """
        return None

    @abstractmethod
    def build(self, task: Task, in_channels: int, num_classes: int, weights: str | None = None) -> nn.Module:
        """Build a fresh module.

        Args:
            task: ``classification`` or ``segmentation``.
            in_channels: Channels of the input (1 for grayscale).
            num_classes: Output classes (logits).
            weights: None (random init), a local file path, or a named set such as
                ``imagenet`` resolved from the local torch hub cache. Never downloads.

        Raises:
            UsageError: When the weights are missing, with the path where to put them.
        """
