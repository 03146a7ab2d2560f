"""MONAI 3D segmentation networks: ``unetr``, ``unetr-tiny``, ``unet3d``, ``swinunetr``.

They take a ``(N, 1, D, H, W)`` volume in [0, 1] (no normalisation, as the reference code of
paper 003 feeds the intensity-windowed CT directly) and return logits ``(N, K, D, H, W)``.
Transformers fix the size of their input: the setting ``roi`` is the cubic patch the network
is built for; the harness trains on patches of that size and evaluates larger volumes with
MONAI's sliding-window inference.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass

import torch
from torch import nn

from medbench.api import SEGMENTATION, Model, Normalization, Task
from medbench_models.weights import check_build_args, load_checkpoint, load_state_strict, resolve_weights


@dataclass(frozen=True)
class RoiSettings:
    """Settings shared by the 3D networks.

    Attributes:
        roi: Side of the cubic patch the network is built for and evaluated on with a
            sliding window (96 in paper 003's reference code).
    """

    roi: int = 96

    def validate(self) -> None:
        if self.roi < 16 or self.roi % 16:
            raise ValueError(f"roi must be a multiple of 16 and at least 16, got {self.roi}")


class MonaiSegmenter(Model):
    """Base of the MONAI 3D segmentation models: weights, ROI, identity normalisation."""

    tasks = SEGMENTATION
    dims = 3
    Settings = RoiSettings

    def normalization(self, in_channels: int) -> Normalization:
        """Identity: the networks take the [0, 1] volume as it is (reference preprocessing)."""
        return Normalization((0.0,) * in_channels, (1.0,) * in_channels)

    def roi_size(self) -> tuple[int, ...]:
        roi = int(self.settings.roi)
        return (roi, roi, roi)

    @abstractmethod
    def network(self, in_channels: int, num_classes: int) -> nn.Module:
        """The freshly initialised MONAI network."""

    def build(self, task: Task, in_channels: int, num_classes: int, weights: str | None = None) -> nn.Module:
        """Build the network; ``weights`` is None or a local state-dict file of the same configuration.

        Raises:
            UsageError: On another task, named weights, a missing file or a state dict that
                does not fit.
        """
        owner = f"model {self.name!r}"
        check_build_args(owner, self.tasks, task, in_channels, num_classes)
        source = resolve_weights(weights, owner=owner)
        if source.kind == "file":
            assert source.path is not None
            state = load_checkpoint(source.path, owner=owner)
            with torch.device("meta"):
                model = self.network(in_channels, num_classes)
            load_state_strict(model, state, source=str(source.path), owner=owner)
            return model
        return self.network(in_channels, num_classes)


@dataclass(frozen=True)
class UNETRSettings(RoiSettings):
    """UNETR (Hatamizadeh et al., 2022) hyper-parameters; defaults are paper 003's reference.

    Attributes:
        roi: Input patch side (96).
        feature_size: Channels of the first decoder stage (16).
        hidden_size: Transformer width (768).
        mlp_dim: Transformer MLP width (3072).
        num_heads: Attention heads (12).
        dropout: Dropout rate (0).
    """

    feature_size: int = 16
    hidden_size: int = 768
    mlp_dim: int = 3072
    num_heads: int = 12
    dropout: float = 0.0

    def validate(self) -> None:
        super().validate()
        if self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be divisible by num_heads")
        if min(self.feature_size, self.hidden_size, self.mlp_dim, self.num_heads) < 1:
            raise ValueError("feature_size, hidden_size, mlp_dim and num_heads must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")


class UNETR(MonaiSegmenter):
    """MONAI UNETR in paper 003's configuration: 16³ patches, perceptron embedding, instance norm."""

    name = "unetr"
    description = "MONAI UNETR, 3D (reference config of paper 003: 96³, ViT-B 768/12 heads, feature 16)"
    Settings = UNETRSettings

    def network(self, in_channels: int, num_classes: int) -> nn.Module:
        from monai.networks.nets import UNETR as MonaiUNETR

        s: UNETRSettings = self.settings
        return MonaiUNETR(
            in_channels=in_channels,
            out_channels=num_classes,
            img_size=self.roi_size(),
            feature_size=s.feature_size,
            hidden_size=s.hidden_size,
            mlp_dim=s.mlp_dim,
            num_heads=s.num_heads,
            proj_type="perceptron",
            norm_name="instance",
            conv_block=True,
            res_block=True,
            dropout_rate=s.dropout,
        )


@dataclass(frozen=True)
class TinyUNETRSettings(UNETRSettings):
    """A UNETR small enough to train on a CPU in minutes (64³, width 96, 4 heads, feature 8)."""

    roi: int = 64
    feature_size: int = 8
    hidden_size: int = 96
    mlp_dim: int = 192
    num_heads: int = 4


class TinyUNETR(UNETR):
    """UNETR with a narrow transformer: the CPU stand-in for ``unetr`` in tests and smoke runs."""

    name = "unetr-tiny"
    description = "MONAI UNETR, 3D, CPU-sized (64³, ViT width 96, 4 heads, feature 8)"
    Settings = TinyUNETRSettings


@dataclass(frozen=True)
class UNet3DSettings(RoiSettings):
    """3D U-Net settings.

    Attributes:
        roi: Sliding-window patch side (96).
        channels: Channels of the five encoder levels.
        res_units: Residual units per level (2).
    """

    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    res_units: int = 2

    def validate(self) -> None:
        super().validate()
        if len(self.channels) < 2 or min(self.channels) < 1:
            raise ValueError("channels needs at least two positive values")
        if self.roi % 2 ** (len(self.channels) - 1):
            levels = len(self.channels)
            raise ValueError(f"roi must be divisible by 2^{levels - 1} for {levels} levels")
        if self.res_units < 0:
            raise ValueError("res_units must be >= 0")


class UNet3D(MonaiSegmenter):
    """MONAI's residual 3D U-Net (Kerfoot et al.), strides 2, instance norm."""

    name = "unet3d"
    description = "MONAI residual 3D U-Net, 5 levels 16-256 channels"
    Settings = UNet3DSettings

    def network(self, in_channels: int, num_classes: int) -> nn.Module:
        from monai.networks.nets import UNet

        s: UNet3DSettings = self.settings
        return UNet(
            spatial_dims=3,
            in_channels=in_channels,
            out_channels=num_classes,
            channels=s.channels,
            strides=(2,) * (len(s.channels) - 1),
            num_res_units=s.res_units,
            norm="instance",
        )


@dataclass(frozen=True)
class SwinUNETRSettings(RoiSettings):
    """Swin UNETR settings.

    Attributes:
        roi: Sliding-window patch side (96; a multiple of 32, at least 64).
        feature_size: Embedding channels (48, as in Hatamizadeh et al.; a multiple of 12).
    """

    feature_size: int = 48

    def validate(self) -> None:
        super().validate()
        if self.roi % 32 or self.roi < 64:
            # at 32 the bottleneck is 1 voxel, which instance norm cannot normalise in training
            raise ValueError(f"roi must be a multiple of 32 and at least 64 for Swin UNETR, got {self.roi}")
        if self.feature_size < 12 or self.feature_size % 12:
            raise ValueError("feature_size must be a positive multiple of 12")


class SwinUNETR(MonaiSegmenter):
    """MONAI Swin UNETR (Hatamizadeh et al., 2022)."""

    name = "swinunetr"
    description = "MONAI Swin UNETR, 3D, feature size 48"
    Settings = SwinUNETRSettings

    def network(self, in_channels: int, num_classes: int) -> nn.Module:
        from monai.networks.nets import SwinUNETR as MonaiSwinUNETR

        s: SwinUNETRSettings = self.settings
        return MonaiSwinUNETR(
            in_channels=in_channels, out_channels=num_classes, feature_size=s.feature_size, spatial_dims=3
        )


SEGMENTATION_MODELS: tuple[type[MonaiSegmenter], ...] = (UNETR, TinyUNETR, UNet3D, SwinUNETR)
