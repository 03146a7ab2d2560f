"""Where the embedded auto-encoder attaches to a classifier, and capturing features with hooks.

The decoder of the denoising CNN reads the output of the classifier's first residual stage
(Xue et al. 2019, Fig. 2; the official code attaches it to ResNet-18's ``layer1``). The
automatic choice per architecture, all at stride 4 of the input:

* ResNet (any module with ``layer1``): ``layer1`` (64 channels for ResNet-18, 256 for ResNet-50).
* DenseNet (``features.denseblock1``): the first dense block (256 channels for DenseNet-121).
* VGG (``features`` an ``nn.Sequential`` with max-pools): the output of the second max-pool,
  ``features.9`` for VGG-16 (128 channels), i.e. the end of VGG's second stage.

Any other architecture needs the ``tap`` setting (a dotted module path).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from medbench.api.toolkit import UsageError

OWNER = "defense 'dcnn'"


def auto_tap(module: nn.Module) -> str | None:
    """The dotted path of the first-stage module of a known architecture, or None."""
    if isinstance(getattr(module, "layer1", None), nn.Module):
        return "layer1"
    features = getattr(module, "features", None)
    if isinstance(features, nn.Module):
        if isinstance(getattr(features, "denseblock1", None), nn.Module):
            return "features.denseblock1"
        if isinstance(features, nn.Sequential):
            pools = [index for index, layer in enumerate(features) if isinstance(layer, nn.MaxPool2d)]
            if len(pools) >= 2:
                return f"features.{pools[1]}"
    return None


def resolve_tap(module: nn.Module, tap: str = "") -> str:
    """The dotted path where the decoder attaches: ``tap`` when given, else :func:`auto_tap`.

    Raises:
        UsageError: ``tap`` names no submodule, or it is empty and the architecture is unknown.
    """
    if tap:
        try:
            module.get_submodule(tap)
        except AttributeError:
            raise UsageError(
                f"{OWNER}: setting tap={tap!r} names no submodule of {type(module).__name__}"
            ) from None
        return tap
    found = auto_tap(module)
    if found is None:
        raise UsageError(
            f"{OWNER}: cannot tell where to attach the decoder in {type(module).__name__}; set the "
            "'tap' setting (e.g. --set defense.dcnn.tap=layer1) to the dotted path of the module "
            "whose output is the first-stage feature map"
        )
    return found


@dataclass(frozen=True)
class TapShape:
    """Shape of the feature map at the tap for one input size.

    Attributes:
        channels: Channels of the feature map.
        size: Its spatial size ``(H, W)``.
        stride: Input height divided by the feature map's height (4 for the automatic taps).
    """

    channels: int
    size: tuple[int, int]
    stride: float


class _Stop(Exception):
    """Raised by the probing hook to skip the rest of the forward pass."""


def probe_tap(module: nn.Module, path: str, input_shape: tuple[int, ...], device: torch.device) -> TapShape:
    """Run one zero image through ``module`` up to the tap and return the feature map's shape.

    Raises:
        UsageError: The input is not 2D or the tap's output is not an ``(N, C, H, W)`` tensor.
    """
    if len(input_shape) != 3:
        raise UsageError(f"{OWNER}: needs 2D images (C, H, W), got input shape {tuple(input_shape)}")
    seen: list[Any] = []

    def hook(_module: nn.Module, _args: Any, output: Any) -> None:
        seen.append(output)
        raise _Stop

    was_training = module.training
    handle = module.get_submodule(path).register_forward_hook(hook)
    try:
        module.eval()  # one sample: batch-norm in training mode would refuse it
        with torch.no_grad():
            module(torch.zeros(1, *input_shape, device=device))
    except _Stop:
        pass
    finally:
        handle.remove()
        module.train(was_training)
    if not seen or not isinstance(seen[0], torch.Tensor) or seen[0].ndim != 4:
        raise UsageError(f"{OWNER}: the output of tap {path!r} is not a (N, C, H, W) feature map")
    output = seen[0]
    height, width = int(output.shape[2]), int(output.shape[3])
    return TapShape(int(output.shape[1]), (height, width), input_shape[1] / height)


@dataclass
class Captured:
    """What :func:`capture` recorded during one forward pass.

    Attributes:
        tap: The output of the tap module (the embedded encoder's code).
        features: The input of the classification head (the semantic features ``f``).
    """

    tap: torch.Tensor | None = None
    features: torch.Tensor | None = None


@contextmanager
def capture(tap: nn.Module | None, head: nn.Module | None) -> Iterator[Captured]:
    """Record the tap's output and the head's input while the block runs; the hooks go afterwards.

    The captured tensors are clones (still in the autograd graph), so that a later in-place
    operation of the network cannot change them.
    """
    captured = Captured()
    handles = []

    def on_tap(_module: nn.Module, _args: Any, output: Any) -> None:
        captured.tap = output.clone()

    def on_head(_module: nn.Module, args: Any) -> None:
        captured.features = args[0].clone()

    try:
        if tap is not None:
            handles.append(tap.register_forward_hook(on_tap))
        if head is not None:
            handles.append(head.register_forward_pre_hook(on_head))
        yield captured
    finally:
        for handle in handles:
            handle.remove()
