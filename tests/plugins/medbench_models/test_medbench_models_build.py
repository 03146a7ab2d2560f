"""Building the built-in models: registration, shapes, heads, normalisation, settings."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import medbench_models
from medbench.api import Model
from medbench.errors import UsageError
from medbench_models.smallcnn import SmallCNN
from medbench_models.torchvision_backbones import TorchvisionBackbone, adapt_conv_weight

NAMES = ["smallcnn", "resnet18", "resnet50", "densenet121", "vgg16"]
BACKBONES = ["resnet18", "resnet50", "densenet121", "vgg16"]


def registered() -> dict[str, Model]:
    models: list[Model] = []
    medbench_models.register_models(models.append)
    return {model.name: model for model in models}


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def head_of(name: str, module: nn.Module) -> nn.Module:
    return module.fc if name.startswith("resnet") else module.classifier  # type: ignore[return-value]


def test_registers_five_models_with_unique_names_and_descriptions() -> None:
    models = registered()
    assert sorted(models) == sorted([*NAMES, "unetr", "unetr-tiny", "unet3d", "swinunetr"])
    assert isinstance(models["smallcnn"], SmallCNN)
    for name in BACKBONES:
        model = models[name]
        assert isinstance(model, TorchvisionBackbone)
        assert model.description.startswith("torchvision ")
        assert model.tasks == frozenset({"classification"})
    assert "ResNet-18" in models["resnet18"].description


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("name", NAMES)
def test_output_shapes(name: str, in_channels: int) -> None:
    module = registered()[name].build("classification", in_channels, 3)
    module.eval()
    with torch.no_grad():
        assert module(torch.rand(1, in_channels, 32, 32)).shape == (1, 3)
        assert module(torch.rand(1, in_channels, 64, 64)).shape == (1, 3)
    assert not any(p.is_meta for p in module.parameters())


def test_smallcnn_small_and_odd_inputs() -> None:
    module = SmallCNN().build("classification", 1, 2).eval()
    with torch.no_grad():
        assert module(torch.rand(4, 1, 8, 8)).shape == (4, 2)
        assert module(torch.rand(1, 1, 37, 50)).shape == (1, 2)


def test_smallcnn_structure_and_settings() -> None:
    module = SmallCNN().build("classification", 1, 2)
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 32, 64, 64]
    assert sum(isinstance(m, nn.MaxPool2d) for m in module.modules()) == 3
    dropout = next(m for m in module.modules() if isinstance(m, nn.Dropout))
    assert dropout.p == pytest.approx(0.2)
    assert isinstance(module[-1], nn.Linear) and module[-1].in_features == 64

    wide = SmallCNN().configured({"width": 8, "dropout": "0.1"}).build("classification", 3, 4)
    convs = [m for m in wide.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 16, 32, 32]
    assert next(m for m in wide.modules() if isinstance(m, nn.Dropout)).p == pytest.approx(0.1)


@pytest.mark.parametrize("name", ["resnet18", "densenet121", "vgg16"])
def test_paper_head_structure(name: str) -> None:
    head = head_of(name, registered()[name].build("classification", 1, 2))
    assert isinstance(head, nn.Sequential)
    assert [type(m) for m in head] == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert head[0].out_features == 256 and head[3].in_features == 256 and head[3].out_features == 2
    assert head[2].p == pytest.approx(0.5)
    expected_features = {"resnet18": 512, "densenet121": 1024, "vgg16": 512 * 7 * 7}[name]
    assert head[0].in_features == expected_features


def test_head_settings() -> None:
    model = registered()["resnet18"].configured({"hidden": 64, "dropout": 0.25})
    head = model.build("classification", 3, 5).fc
    assert head[0].out_features == 64 and head[3].in_features == 64 and head[3].out_features == 5
    assert head[2].p == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("resnet18", {"hidden": 0}),
        ("resnet18", {"dropout": 1.0}),
        ("smallcnn", {"width": 0}),
        ("smallcnn", {"dropot": 0.1}),
    ],
)
def test_bad_settings_are_usage_errors(name: str, overrides: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        registered()[name].configured(overrides)


@pytest.mark.parametrize("name", ["resnet18", "densenet121", "vgg16"])
def test_first_conv_takes_in_channels(name: str) -> None:
    module = registered()[name].build("classification", 1, 2)
    first = next(m for m in module.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == 1
    module = registered()[name].build("classification", 4, 2)
    assert next(m for m in module.modules() if isinstance(m, nn.Conv2d)).in_channels == 4


def test_parameter_counts_at_one_channel_two_classes() -> None:
    models = registered()
    counts = {
        name: n_params(models[name].build("classification", 1, 2)) for name in ["smallcnn", "densenet121"]
    }
    assert counts == {"smallcnn": 60_530, "densenet121": 7_210_498}


def test_vgg16_classifier_is_replaced_whole() -> None:
    module = registered()["vgg16"].build("classification", 1, 2)
    assert n_params(module.classifier) == 25088 * 256 + 256 + 256 * 2 + 2
    assert n_params(module) == 21_136_834
    # initialised like torchvision: Kaiming normal (fan_out) convolutions with zero bias
    conv = module.features[2]
    assert conv.bias is not None and torch.count_nonzero(conv.bias) == 0
    assert conv.weight.std().item() == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.1)


def test_normalization() -> None:
    models = registered()
    assert models["smallcnn"].normalization(1).mean == (0.5,)
    assert models["smallcnn"].normalization(3).std == (0.25, 0.25, 0.25)
    for name in BACKBONES:
        rgb = models[name].normalization(3)
        assert rgb.mean == (0.485, 0.456, 0.406) and rgb.std == (0.229, 0.224, 0.225)
        gray = models[name].normalization(1)
        assert gray.mean == (0.449,) and gray.std == (0.226,)
        assert models[name].normalization(2).mean == (0.449, 0.449)


@pytest.mark.parametrize("name", ["smallcnn", "resnet18"])
def test_other_tasks_and_bad_shapes_are_usage_errors(name: str) -> None:
    model = registered()[name]
    with pytest.raises(UsageError, match="classification"):
        model.build("segmentation", 1, 2)
    with pytest.raises(UsageError, match="in_channels"):
        model.build("classification", 0, 2)
    with pytest.raises(UsageError, match="num_classes"):
        model.build("classification", 1, 0)


def test_unknown_architecture_is_rejected() -> None:
    with pytest.raises(ValueError, match="resnet18"):
        TorchvisionBackbone("resnet19")


def test_adapt_conv_weight() -> None:
    weight = torch.randn(8, 3, 3, 3)
    assert torch.equal(adapt_conv_weight(weight, 3), weight)
    torch.testing.assert_close(adapt_conv_weight(weight, 1), weight.sum(dim=1, keepdim=True))
    five = adapt_conv_weight(weight, 5)
    assert five.shape == (8, 5, 3, 3)
    torch.testing.assert_close(five[:, 3:], weight[:, :2] * 0.6)
    # with a multiple of 3 channels, a constant image gives the same response as in RGB
    torch.testing.assert_close(adapt_conv_weight(weight, 6).sum(dim=1), weight.sum(dim=1))
