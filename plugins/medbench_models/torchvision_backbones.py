"""torchvision backbones (ResNet-18/50, DenseNet-121, VGG-16) with the head of Chen & Luo 2024.

Each backbone is adapted to the input and given a new classification head:

* **Input channels.** The first convolution is replaced by one with ``in_channels``
  inputs (same kernel, stride, padding, bias). With ImageNet weights its kernel is derived
  from the pretrained RGB kernel ``W`` (shape ``(out, 3, k, k)``): for one channel it is
  ``W.sum(dim=1)``, so a gray image ``g`` gives the same response as the RGB image
  ``(g, g, g)``; for ``c`` other than 1 or 3 the RGB kernels are repeated cyclically over
  the ``c`` channels and scaled by ``3 / c`` (the convention of timm's
  ``adapt_input_conv``). With random init the new convolution is initialised like the
  architecture's own.
* **Head.** Following paper 000 (Chen & Luo 2024, "we replace the last layer of these
  three models by a new sequential layer consisting of a dense layer, a dropout layer, and
  a final dense layer") the classifier becomes
  ``Linear(num_features, hidden) -> ReLU -> Dropout(dropout) -> Linear(hidden, num_classes)``.
  For ResNet it replaces ``fc`` (``num_features`` 512 / 2048), for DenseNet ``classifier``
  (1024). For **VGG-16** it replaces the **whole** ``classifier`` (the three dense layers
  fc6, fc7, fc8, 123M parameters) and reads the flattened 7x7x512 output of VGG's
  adaptive average pool (``num_features`` 25088). Reasons: in the usual (Keras) transfer
  learning idiom "the top" of VGG is all three dense layers (``include_top=False`` drops
  them), so the head sits directly on the convolutional features as it does for ResNet
  and DenseNet; and VGG-16 stays at 21M parameters instead of 135M, which matters for CPU
  training. On small inputs (32x32 to 64x64) the 7x7 pool only replicates a 1x1 or 2x2
  map, so little of the ImageNet fc6/fc7 would carry over anyway. The alternative,
  replacing only fc8 by the head, is not offered.

Inputs from 32x32 upwards work for all four (the feature maps shrink by 32).
Normalisation: ImageNet mean/std for 3 channels; their gray equivalents (mean 0.449,
std 0.226) on every channel otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from medbench.api import CLASSIFICATION, Model, Normalization, Task
from medbench_models.weights import (
    check_build_args,
    load_checkpoint,
    load_named_state_dict,
    load_state_strict,
    resolve_weights,
    torchvision_weight_names,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GRAY_MEAN = 0.449
"""Mean of the ImageNet RGB means, for single-channel input."""
GRAY_STD = 0.226
"""Mean of the ImageNet RGB stds, for single-channel input."""


@dataclass(frozen=True)
class _Arch:
    title: str
    first_conv: str
    """Dotted path of the first convolution."""
    head: str
    """Dotted path of the module replaced by the paper head."""
    conv_init: Literal["fan_in", "fan_out"]
    """How the architecture initialises its convolutions: ``fan_in`` or ``fan_out``."""


ARCHITECTURES: dict[str, _Arch] = {
    "resnet18": _Arch("ResNet-18", "conv1", "fc", "fan_out"),
    "resnet50": _Arch("ResNet-50", "conv1", "fc", "fan_out"),
    "densenet121": _Arch("DenseNet-121", "features.conv0", "classifier", "fan_in"),
    "vgg16": _Arch("VGG-16", "features.0", "classifier", "fan_out"),
}


def paper_head(num_features: int, num_classes: int, hidden: int = 256, dropout: float = 0.5) -> nn.Sequential:
    """The classification head of Chen & Luo 2024: dense, ReLU, dropout, dense.

    Args:
        num_features: Size of the backbone's feature vector.
        num_classes: Output logits.
        hidden: Width of the first dense layer.
        dropout: Dropout probability between the two dense layers.
    """
    return nn.Sequential(
        nn.Linear(num_features, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )


def _head_features(arch: str, old_head: nn.Module) -> int:
    if arch.startswith("vgg"):
        first = old_head[0] if isinstance(old_head, nn.Sequential) else None
        if not isinstance(first, nn.Linear):
            raise TypeError(f"unexpected {arch} classifier: {old_head}")
        return first.in_features
    if not isinstance(old_head, nn.Linear):
        raise TypeError(f"unexpected {arch} head: {old_head}")
    return old_head.in_features


def _set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, child, module)


def adapt_conv_weight(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Turn an RGB kernel ``(out, 3, k, k)`` into one for ``in_channels`` inputs.

    One channel: the sum over the RGB kernels (a gray image ``g`` then gives the response of
    the RGB image ``(g, g, g)``). Three: unchanged. Otherwise the RGB kernels repeated
    cyclically and scaled by ``3 / in_channels``, which keeps the kernel's total mass (exactly
    when ``in_channels`` is a multiple of 3), as timm's ``adapt_input_conv`` does.
    """
    if in_channels == weight.shape[1]:
        return weight.clone()
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = math.ceil(in_channels / weight.shape[1])
    return weight.repeat(1, repeats, 1, 1)[:, :in_channels] * (weight.shape[1] / in_channels)


def _replace_first_conv(model: nn.Module, spec: _Arch, in_channels: int, *, pretrained: bool) -> None:
    old = model.get_submodule(spec.first_conv)
    if not isinstance(old, nn.Conv2d):
        raise TypeError(f"unexpected first layer: {old}")
    if old.in_channels == in_channels:
        return
    new = nn.Conv2d(
        in_channels,
        old.out_channels,
        kernel_size=old.kernel_size,  # type: ignore[arg-type]
        stride=old.stride,  # type: ignore[arg-type]
        padding=old.padding,  # type: ignore[arg-type]
        dilation=old.dilation,  # type: ignore[arg-type]
        groups=old.groups,
        bias=old.bias is not None,
        device=old.weight.device,  # meta when the weights are loaded afterwards
    )
    with torch.no_grad():
        if pretrained:
            new.weight.copy_(adapt_conv_weight(old.weight, in_channels))
            if old.bias is not None and new.bias is not None:
                new.bias.copy_(old.bias)
        else:
            nn.init.kaiming_normal_(new.weight, mode=spec.conv_init, nonlinearity="relu")
            if new.bias is not None:
                nn.init.zeros_(new.bias)
    _set_submodule(model, spec.first_conv, new)


def _init_vgg(model: nn.Module) -> None:
    """Initialise a VGG materialised from meta: torchvision's rule for the convolutions
    (Kaiming normal, fan_out, zero bias) and PyTorch's default for the head's dense layers."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.BatchNorm2d, nn.Linear)):
                module.reset_parameters()


class TorchvisionBackbone(Model):
    """A torchvision classification backbone with the Chen & Luo 2024 head.

    One class serves every architecture of :data:`ARCHITECTURES`; the plugin registers one
    instance per architecture, named after it (``resnet18``, ``resnet50``,
    ``densenet121``, ``vgg16``).

    Weights: None (random init), ``imagenet`` (torchvision's default ImageNet weights, or
    an enum name such as ``imagenet1k_v1``) read from ``$MEDBENCH_WEIGHTS_DIR`` or the
    torch hub cache, never downloaded, or a local state dict of the adapted model.
    """

    tasks = CLASSIFICATION
    dims = 2

    @dataclass(frozen=True)
    class Settings:
        """Settings of the torchvision backbones.

        Attributes:
            hidden: Width of the head's first dense layer.
            dropout: Dropout probability between the head's two dense layers.
        """

        hidden: int = 256
        dropout: float = 0.5

        def validate(self) -> None:
            if self.hidden < 1:
                raise ValueError(f"hidden must be at least 1, got {self.hidden}")
            if not 0.0 <= self.dropout < 1.0:
                raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def __init__(self, arch: str, settings: TorchvisionBackbone.Settings | None = None) -> None:
        """Create the plugin object of one architecture.

        Args:
            arch: A key of :data:`ARCHITECTURES`.
            settings: Head settings; the defaults when None.
        """
        if arch not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
        super().__init__(settings)
        spec = ARCHITECTURES[arch]
        self.arch = arch
        # name and description are per instance (one class, four registered models); the
        # ignores are for api.Plugin declaring them ClassVar
        self.name = arch  # type: ignore[misc]
        self.description = (  # type: ignore[misc]
            f"torchvision {spec.title}, head dense-dropout-dense (Chen & Luo 2024); local ImageNet weights"
        )

    def normalization(self, in_channels: int) -> Normalization:
        """ImageNet mean/std for 3 channels, the gray equivalents (0.449, 0.226) otherwise."""
        if in_channels == 3:
            return Normalization(IMAGENET_MEAN, IMAGENET_STD)
        return Normalization((GRAY_MEAN,) * in_channels, (GRAY_STD,) * in_channels)

    def weight_names(self) -> frozenset[str]:
        """The named weights this model offers: ``imagenet`` and torchvision's enum names."""
        return torchvision_weight_names(self.arch)

    def build(self, task: Task, in_channels: int, num_classes: int, weights: str | None = None) -> nn.Module:
        """Build the adapted backbone.

        Args:
            task: Only ``classification``.
            in_channels: Input channels; the first convolution is replaced when not 3.
            num_classes: Output logits of the new head.
            weights: None, ``imagenet`` (or a torchvision enum name, lowercase) from local
                files only, or a local state dict of this adapted model.

        Raises:
            UsageError: On another task, missing or corrupt ImageNet weights (naming the
                paths searched) or a local state dict that does not fit.
        """
        owner = f"model {self.name!r}"
        check_build_args(owner, self.tasks, task, in_channels, num_classes)
        source = resolve_weights(weights, owner=owner, named=self.weight_names())
        if source.kind == "named":
            assert source.name is not None
            path, state = load_named_state_dict(self.arch, source.name, owner=owner)
            model = self._torchvision_model(meta=True)
            load_state_strict(model, state, source=str(path), owner=owner)
            return self._adapt(model, in_channels, num_classes, pretrained=True)
        # built on meta (no init cost) when every tensor is loaded afterwards, and for VGG,
        # whose 123M-parameter classifier torchvision would initialise (~1 s) only to be replaced
        meta = source.kind == "file" or self.arch.startswith("vgg")
        model = self._adapt(self._torchvision_model(meta=meta), in_channels, num_classes, pretrained=False)
        if source.kind == "file":
            assert source.path is not None
            state = load_checkpoint(source.path, owner=owner)
            load_state_strict(model, state, source=str(source.path), owner=owner)
        elif meta:
            model.to_empty(device="cpu")
            _init_vgg(model)
        return model

    def _torchvision_model(self, *, meta: bool) -> nn.Module:
        from torchvision.models import get_model

        if meta:  # nothing allocated nor initialised
            with torch.device("meta"):
                return get_model(self.arch, weights=None)
        return get_model(self.arch, weights=None)

    def _adapt(self, model: nn.Module, in_channels: int, num_classes: int, *, pretrained: bool) -> nn.Module:
        spec = ARCHITECTURES[self.arch]
        _replace_first_conv(model, spec, in_channels, pretrained=pretrained)
        old_head = model.get_submodule(spec.head)
        num_features = _head_features(self.arch, old_head)
        with next(old_head.parameters()).device:
            head = paper_head(num_features, num_classes, self.settings.hidden, self.settings.dropout)
        _set_submodule(model, spec.head, head)
        return model
