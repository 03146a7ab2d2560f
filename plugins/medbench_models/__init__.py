"""medbench's built-in models.

* ``smallcnn``: a small four-block CNN that trains in seconds on a CPU (the default model).
* ``resnet18``, ``resnet50``, ``densenet121``, ``vgg16``: torchvision backbones adapted to
  the input channels, with the dense-dropout-dense head of Chen & Luo 2024 and optional
  ImageNet weights read from local files only (``$MEDBENCH_WEIGHTS_DIR`` or the torch hub
  cache; see :mod:`medbench_models.weights`).
* ``unetr``, ``unetr-tiny``, ``unet3d``, ``swinunetr``: MONAI 3D segmentation networks
  (:mod:`medbench_models.segmentation3d`).

Registered through the ``medbench`` entry-point group like any third-party plugin.
"""

from __future__ import annotations

from collections.abc import Callable

from medbench import hookimpl
from medbench.api import Model
from medbench_models.segmentation3d import SEGMENTATION_MODELS
from medbench_models.smallcnn import SmallCNN
from medbench_models.torchvision_backbones import ARCHITECTURES, TorchvisionBackbone

__all__ = ["SmallCNN", "TorchvisionBackbone", "register_models"]


@hookimpl
def register_models(register: Callable[[Model], None]) -> None:
    """Register ``smallcnn``, one model per torchvision backbone and the 3D segmentation networks."""
    register(SmallCNN())
    for arch in ARCHITECTURES:
        register(TorchvisionBackbone(arch))
    for model in SEGMENTATION_MODELS:
        register(model())
