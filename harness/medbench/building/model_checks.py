"""Checks, before anything trains, that every model fits the data and every defense its model.

:func:`check_model_fits` runs a user's model (or a model with a ``--checkpoint``) on two test
samples and checks what it returns; :func:`check_buildable` builds every defense chain on
every model without training anything (a dry run of :meth:`~medbench.api.Defense.build`), so
that a defense that cannot wrap a model is a usage error at once, not after hours of
training the other defenses.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from medbench.api import DatasetBundle, DefendedModel, Defense, DefenseContext, Model, Normalization
from medbench.building.user_models import UserModel, load_state_file
from medbench.errors import UsageError, first_line
from medbench.wrapping.forward import defended_logits

PROBE_SAMPLES = 2


def build_module(
    model: Model, bundle: DatasetBundle, weights: str | None, checkpoint: str | None
) -> nn.Module:
    """The model's module for this data, with ``weights`` and then ``checkpoint`` loaded.

    Raises:
        UsageError: When building fails or the checkpoint does not fit.
    """
    try:
        module = model.build(bundle.task, bundle.in_channels, bundle.num_classes, weights)
    except UsageError:
        raise
    except Exception as error:
        raise UsageError(
            f"model {model.name!r} could not be built for this data: {first_line(error)}"
        ) from error
    if checkpoint is not None:
        load_state_file(module, Path(checkpoint), owner=f"model {model.name!r}", option="--checkpoint")
    return module


def check_model_fits(
    name: str, model: Model, bundle: DatasetBundle, weights: str | None, checkpoint: str | None
) -> nn.Module | None:
    """Run a user's model (or one with a checkpoint) on two test samples and check its outputs.

    Plugin models without a checkpoint are built for the data by their plugin and skip this.

    Returns:
        The module that was checked (None when skipped), e.g. to identify a factory by what it builds.

    Raises:
        UsageError: When the model fails on the data (channels, size), or returns outputs of
            the wrong shape or dtype for the task and number of classes.
    """
    check_normalization(name, model, bundle)
    if not isinstance(model, UserModel) and checkpoint is None:
        return None
    module = build_module(model, bundle, weights, checkpoint).eval()
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    samples = [bundle.test[i] for i in range(min(PROBE_SAMPLES, len(bundle.test)))]  # type: ignore[arg-type]
    x = torch.stack([torch.as_tensor(image) for image, _ in samples]).float().to(device)
    defended = DefendedModel(module, model.normalization(bundle.in_channels))
    try:
        with torch.no_grad():
            outputs = defended_logits(defended, x)
    except Exception as error:
        raise UsageError(
            f"model {name!r} fails on the data's input of shape {tuple(x.shape[1:])}: {first_line(error)}"
        ) from error
    _check_outputs(name, outputs, x, bundle, one_logit=not isinstance(model, UserModel))
    return module


def check_normalization(
    name: str, model: Model, bundle: DatasetBundle, override: Normalization | None = None
) -> None:
    """The model's normalisation (or ``override``) must have one value per channel of the data, or one.

    Raises:
        UsageError: Naming the model and both channel counts.
    """
    try:
        if override is not None:
            override.for_channels(bundle.in_channels)
        else:
            model.normalization(bundle.in_channels)
    except ValueError as error:
        raise UsageError(
            f"model {name!r}: {error}; give --normalization for {bundle.in_channels} channel(s), or "
            "data with the channels the model expects (e.g. --channels 3)"
        ) from None


def _check_outputs(
    name: str, outputs: object, x: torch.Tensor, bundle: DatasetBundle, one_logit: bool
) -> None:
    if not isinstance(outputs, torch.Tensor) or not outputs.is_floating_point():
        kind = outputs.dtype if isinstance(outputs, torch.Tensor) else type(outputs).__name__
        raise UsageError(f"model {name!r} must return a float tensor of logits, returned {kind}")
    classes = bundle.num_classes
    if bundle.task == "classification":
        expected: tuple[int, ...] = (len(x), classes)
        fits = tuple(outputs.shape) == expected or (
            one_logit and classes == 2 and not bundle.multilabel and tuple(outputs.shape) == (len(x), 1)
        )
        if tuple(outputs.shape) == (len(x), 1) and not fits:
            raise UsageError(
                f"model {name!r} returns one logit per sample; return one per class (2 for a binary "
                "task), as the attacks' cross-entropy needs"
            )
    else:
        expected = (len(x), classes, *x.shape[2:])
        fits = tuple(outputs.shape) == expected
    if not fits:
        raise UsageError(
            f"model {name!r} returned outputs of shape {tuple(outputs.shape)} on {len(x)} samples; "
            f"expected {expected} for the data's {classes} classes ({', '.join(bundle.class_names[:6])}: "
            "as many as the labels need, or as class_names= gives)"
        )


def check_buildable(
    name: str, model: Model, label: str, chain: list[Defense], bundle: DatasetBundle, weights: str | None
) -> None:
    """Build ``chain`` on ``model`` without training anything.

    Raises:
        UsageError: Naming the model and defense, when the defense cannot be built on it.
    """
    context = DryContext(model, chain, bundle, weights)
    try:
        with torch.random.fork_rng():
            chain[0].build(context)
    except Exception as error:
        raise UsageError(
            f"defense {label!r} cannot be built on model {name!r}: {first_line(error)}"
        ) from error


class DryContext(DefenseContext):
    """A :class:`~medbench.api.DefenseContext` whose models are untrained and whose training is skipped."""

    def __init__(
        self, model: Model, chain: list[Defense], bundle: DatasetBundle, weights: str | None
    ) -> None:
        self._model = model
        self._chain = chain
        self._weights = weights
        self.dataset = bundle
        self.device = torch.device("cpu")
        self.seed = 0

    def new_model(self, in_channels: int | None = None) -> DefendedModel:
        channels = self.dataset.in_channels if in_channels is None else in_channels
        module = self._model.build(self.dataset.task, channels, self.dataset.num_classes, self._weights)
        return DefendedModel(module, self._model.normalization(channels))

    def normalization(self, in_channels: int | None = None) -> Normalization:
        return self._model.normalization(self.dataset.in_channels if in_channels is None else in_channels)

    def head(self, module: nn.Module) -> nn.Module:
        return self._model.head(module)

    def trained(self, defense: Defense) -> DefendedModel:
        return defense.build(DryContext(self._model, [defense], self.dataset, self._weights))

    def base(self) -> DefendedModel:
        rest = self._chain[1:]
        if not rest:
            return self.new_model()
        return rest[0].build(DryContext(self._model, rest, self.dataset, self._weights))

    def train(self, defended: DefendedModel, **_: object) -> None:
        """Nothing is trained in a dry run."""

    def logits(self, defended: DefendedModel, x: torch.Tensor) -> torch.Tensor:
        return defended_logits(defended, x)

    def roi_size(self) -> tuple[int, ...] | None:
        return self._model.roi_size()
