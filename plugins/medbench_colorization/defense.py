"""Defenses ``colorize-deconv``, ``colorize-pixelshuffle`` and ``colorize-coloru`` (paper 002 §III).

Each puts a colorization module T in front of the run's model plugin (built for 3-channel
input with the run's ``--weights``, e.g. ImageNet) and trains in one of three stages:

* ``color-module`` (eq. 1): T and the head C learn from scratch; the backbone's encoder E
  is frozen, parameters and BatchNorm statistics alike.
* ``all`` (eq. 2): starts from the ``color-module`` result of the same model, dataset and
  training settings (trained first when not cached) and fine-tunes T, E and C. With
  ``reset_head`` (the default) C is learned from scratch, as the paper's experiments do
  ("both T and E are fine-tuned, while C is learned from scratch").
* ``last-layer`` (eq. 3): T and E come from ``source`` and stay frozen; only a fresh head
  C is trained. ``source`` is a stage of this defense trained on the same dataset
  (``all`` gives {θ_T^A, θ_E^A}, ``color-module`` gives {θ_T^M, θ_E^I}) or the path of a
  medbench model-cache ``.pt`` file of the same defense and model from another run (for
  instance on another dataset, the paper's transfer setting).

The defended model takes the dataset's images (1 channel for grayscale), normalised
with the model plugin's normalisation for that many channels, and feeds T's unbounded
3-channel output to the backbone directly, without normalisation or activation, as the
reference implementation does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from medbench.api import DefendedModel, Defense, DefenseContext
from medbench.api.toolkit import UsageError, normalize
from medbench_colorization.classifier import ColorizedClassifier, Part
from medbench_colorization.coloru import DIVISOR, ColorU
from medbench_colorization.deconv import Deconv
from medbench_colorization.pixelshuffle import PixelShuffleColorizer

STAGES = ("color-module", "all", "last-layer")
SOURCE_STAGES = ("all", "color-module")
FROZEN: dict[str, tuple[Part, ...]] = {
    "color-module": ("backbone",),
    "all": (),
    "last-layer": ("colorizer", "backbone"),
}
"""What each stage keeps frozen (the head C is always trained)."""


@dataclass(frozen=True)
class ColorizationSettings:
    """Settings of the ``colorize-*`` defenses.

    Attributes:
        stage: ``color-module`` (train T and C, backbone frozen), ``all`` (fine-tune T, E and
            C starting from the ``color-module`` result) or ``last-layer`` (train only C on
            top of T and E taken from ``source``, frozen).
        source: For ``last-layer`` only: ``all`` or ``color-module`` (that stage of this
            defense, trained on the same model and dataset), or the path of a ``.pt`` file
            from medbench's model cache (another run of this defense with the same model,
            e.g. on another dataset). The file's SHA-256 is part of the model-cache key, so
            a changed file retrains this stage.
        reset_head: For ``all`` only: learn C from scratch (paper eq. 2) instead of
            starting from the ``color-module`` head.
    """

    stage: str = "color-module"
    source: str = "all"
    reset_head: bool = True

    def validate(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {self.stage!r}")
        if not self.source.strip():
            raise ValueError("source must be a stage (all, color-module) or the path of a .pt file")
        if self.source in STAGES and self.source not in SOURCE_STAGES:
            raise ValueError(f"source must be all, color-module or a file path, got {self.source!r}")
        if self.stage != "last-layer" and self.source != "all":
            raise ValueError("source applies only to stage last-layer")
        if self.stage != "all" and not self.reset_head:
            raise ValueError("reset_head applies only to stage all")


class Colorization(Defense):
    """Deep colorization (Morra et al., ICPR 2020) with one colorization module architecture.

    Subclasses set :attr:`module` to the colorization module's class.
    """

    kind = "training"
    Settings = ColorizationSettings
    module: ClassVar[Callable[[int], nn.Module]]
    """Builds the colorization module from the number of input channels."""
    divisor: ClassVar[int] = 1
    """The module needs image sizes that are multiples of this."""

    @property
    def stage(self) -> str:
        return str(self.settings.stage)

    def build(self, ctx: DefenseContext) -> DefendedModel:
        """The colorization module and a fresh backbone, frozen as the stage needs.

        Raises:
            UsageError: On 3D data, or an image size the module cannot take.
        """
        shape = ctx.dataset.input_shape
        if len(shape) != 3:
            raise UsageError(f"defense {self.name!r} works on 2D images, got input shape {shape}")
        channels, height, width = shape
        if height % self.divisor or width % self.divisor:
            raise UsageError(
                f"defense {self.name!r} needs image sizes divisible by {self.divisor}, got {height}x{width}"
            )
        base = ctx.new_model(in_channels=3)
        backbone = base.model
        colorizer = type(self).module(channels).to(next(backbone.parameters()).device)
        model = ColorizedClassifier(colorizer, backbone, ctx.head(backbone))
        model.freeze(FROZEN[self.stage])
        return DefendedModel(model=model, normalization=ctx.normalization(channels))

    def fit(self, defended: DefendedModel, ctx: DefenseContext) -> None:
        """Train the stage (see the module docstring)."""
        model = colorized(defended)
        if self.stage == "all":
            previous = ctx.trained(self.at_stage("color-module"))
            load_transferred(
                model, colorized(previous).state_dict(), self.name, with_head=not self.settings.reset_head
            )
        elif self.stage == "last-layer":
            source = str(self.settings.source)
            if source in SOURCE_STAGES:
                state = colorized(ctx.trained(self.at_stage(source))).state_dict()
                load_transferred(model, state, f"stage {source!r} of {self.name!r}", with_head=False)
            else:
                path = Path(source).expanduser()
                load_transferred(model, read_cache_entry(path), str(path), with_head=False)
        model.freeze(FROZEN[self.stage])
        ctx.train(defended, parameters=model.trainable_parameters())

    def cache_identity(self) -> dict[str, Any]:
        """The SHA-256 of the ``source`` file of a ``last-layer`` stage, so that a changed file retrains."""
        source = str(self.settings.source)
        if self.stage != "last-layer" or source in SOURCE_STAGES:
            return {}
        path = Path(source).expanduser()
        if not path.is_file():
            return {"source_missing": str(path)}  # fit() reports it with a clear error
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        return {"source_sha256": digest.hexdigest()}

    def at_stage(self, stage: str) -> Colorization:
        """This defense at ``stage`` with the other settings at their defaults (one cache entry per stage)."""
        configured: Colorization = self.configured({"stage": stage, "source": "all", "reset_head": True})
        return configured

    def visualize(self, defended: DefendedModel, x: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        """The input and what the colorization module makes of it (paper Fig. 4).

        The module's output is unbounded; each colorized image is min-max scaled to [0, 1]
        on its own (over all three channels together, so hues are kept), which shows its
        colours but not its absolute scale. A constant image becomes black.

        Returns:
            ``{"colorized": [x, colorized]}``.
        """
        model = colorized(defended)
        with torch.no_grad():
            colors = model.colorizer(normalize(x, defended.normalization))
            low = colors.amin(dim=(1, 2, 3), keepdim=True)
            span = colors.amax(dim=(1, 2, 3), keepdim=True) - low
            scaled = (colors - low) / span.clamp_min(torch.finfo(colors.dtype).tiny)
        return {"colorized": [x, scaled.clamp(0, 1)]}


class DeconvColorization(Colorization):
    """Deep colorization with the DECONV module (596,611 parameters at 1 input channel)."""

    name = "colorize-deconv"
    description = "deep colorization (Morra et al. 2020) with the DECONV module, staged training"
    module = Deconv


class PixelShuffleColorization(Colorization):
    """Deep colorization with the PixelShuffle module (599,440 parameters at 1 input channel)."""

    name = "colorize-pixelshuffle"
    description = "deep colorization (Morra et al. 2020) with the PixelShuffle module, staged training"
    module = PixelShuffleColorizer


class ColorUColorization(Colorization):
    """Deep colorization with the ColorU module (192,659 parameters at 1 input channel); sizes % 8 == 0."""

    name = "colorize-coloru"
    description = "deep colorization (Morra et al. 2020) with the ColorU module, staged training"
    module = ColorU
    divisor = DIVISOR


def colorized(defended: DefendedModel) -> ColorizedClassifier:
    """The :class:`ColorizedClassifier` of a defended model built by a ``colorize-*`` defense."""
    model = defended.model
    if not isinstance(model, ColorizedClassifier):
        raise TypeError(f"expected a ColorizedClassifier, got {type(model).__name__}")
    return model


def read_cache_entry(path: Path) -> dict[str, torch.Tensor]:
    """The ``model`` state dict of a medbench model-cache file.

    Raises:
        UsageError: When the file is missing, unreadable or not a cache entry; names the path.
    """
    if not path.is_file():
        raise UsageError(
            f"colorization source {path} does not exist (expected a .pt file of the model cache)"
        )
    try:
        states = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UsageError(f"colorization source {path} cannot be read: {error}") from None
    model = states.get("model") if isinstance(states, dict) else None
    if not isinstance(model, dict):
        raise UsageError(
            f"colorization source {path} is not a medbench model-cache entry (no 'model' states)"
        )
    return model


def load_transferred(
    model: ColorizedClassifier, state: Mapping[str, Any], source: str, *, with_head: bool
) -> None:
    """Load T and E (and C when ``with_head``) from a :class:`ColorizedClassifier` state dict.

    Without ``with_head`` the head keeps its fresh initialisation (its class count may differ
    from the source's).

    Raises:
        UsageError: When ``state`` does not hold a fitting colorization module and backbone.
    """
    head = {f"backbone.{key}" for key in model.head_keys()}
    wanted = {key: value for key, value in state.items() if with_head or key not in head}
    expected = set(model.state_dict()) - (set() if with_head else head)
    missing, unexpected = sorted(expected - set(wanted)), sorted(set(wanted) - expected)
    if missing or unexpected:
        raise UsageError(
            f"{source} does not fit this colorization model (another module or backbone?): "
            f"missing {_some(missing)}, unexpected {_some(unexpected)}"
        )
    try:
        model.load_state_dict(wanted, strict=False)
    except RuntimeError as error:
        raise UsageError(f"{source} does not fit this colorization model: {error}") from None


def _some(keys: list[str], limit: int = 3) -> str:
    if not keys:
        return "none"
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more
