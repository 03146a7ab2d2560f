"""Tests of the deep colorization plugin: the three modules and the staged-training defenses."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from medbench.api import DatasetBundle, DefendedModel, Defense
from medbench.building.cache import ModelCache
from medbench.building.defending import Context, DefenseBuilder
from medbench.config.spec import TrainingSettings
from medbench.errors import UsageError
from medbench.plugins.host import load_plugins
from medbench.testing import check_defense, tiny_bundle
from medbench_colorization.classifier import ColorizedClassifier
from medbench_colorization.coloru import ColorU
from medbench_colorization.deconv import Deconv
from medbench_colorization.defense import (
    ColorUColorization,
    DeconvColorization,
    PixelShuffleColorization,
    load_transferred,
)
from medbench_colorization.pixelshuffle import PixelShuffleColorizer
from medbench_models.smallcnn import SmallCNN, small_cnn

MODULES = [Deconv, PixelShuffleColorizer, ColorU]
BUNDLE = tiny_bundle(size=32)


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def builder_for(directory: Path, bundle: DatasetBundle = BUNDLE) -> DefenseBuilder:
    """A builder configured as ``check_defense`` configures its own (so results coincide)."""
    return DefenseBuilder(
        dataset=bundle,
        model_name="smallcnn",
        model=SmallCNN(),
        weights=None,
        standard=load_plugins(check=False).registries.defenses.get("none"),
        training=TrainingSettings(epochs=1, batch_size=16),
        device=torch.device("cpu"),
        seed=0,
        cache=ModelCache(directory),
    )


def untrained(defense: Defense, builder: DefenseBuilder) -> ColorizedClassifier:
    model = defense.build(Context(builder, [defense])).model
    assert isinstance(model, ColorizedClassifier)
    return model


def colorized(defended: DefendedModel) -> ColorizedClassifier:
    assert isinstance(defended.model, ColorizedClassifier)
    return defended.model


def head_keys(model: ColorizedClassifier) -> set[str]:
    return {f"backbone.{key}" for key in model.head_keys()}


def changed_keys(before: nn.Module, after: nn.Module) -> set[str]:
    old, new = before.state_dict(), after.state_dict()
    assert old.keys() == new.keys()
    return {key for key in old if not torch.equal(old[key], new[key])}


def parameter_keys(module: nn.Module, prefix: str = "") -> set[str]:
    return {f"{prefix}{name}" for name, _ in module.named_parameters()}


# --------------------------------------------------------------------------- modules


@pytest.mark.parametrize("module_class", MODULES)
def test_gray_224_becomes_rgb_224(module_class: type[nn.Module]) -> None:
    torch.manual_seed(0)
    module = module_class(1).eval()
    with torch.no_grad():
        out = module(torch.rand(1, 1, 224, 224))
    assert out.shape == (1, 3, 224, 224)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("module_class", MODULES)
@pytest.mark.parametrize("size", [32, 64])
def test_small_inputs_keep_their_size(module_class: type[nn.Module], size: int) -> None:
    module = module_class(1)
    out = module(torch.rand(2, 1, size, size))
    assert out.shape == (2, 3, size, size)
    out.sum().backward()


@pytest.mark.parametrize("module_class", [Deconv, PixelShuffleColorizer])
@pytest.mark.parametrize("size", [33, 34, 35, (36, 41)])
def test_trunk_modules_resize_unreachable_sizes(module_class: type[nn.Module], size: int | tuple) -> None:
    height, width = (size, size) if isinstance(size, int) else size
    out = module_class(1).eval()(torch.rand(1, 1, height, width))
    assert out.shape == (1, 3, height, width)


def test_modules_take_other_channel_counts() -> None:
    for module_class in MODULES:
        assert module_class(3)(torch.rand(2, 3, 32, 32)).shape == (2, 3, 32, 32)


def test_coloru_rejects_sizes_not_divisible_by_8() -> None:
    with pytest.raises(ValueError, match="divisible by 8"):
        ColorU(1)(torch.rand(1, 1, 36, 32))


def _layer(layer: nn.Module) -> tuple:
    if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
        kind = "convT" if isinstance(layer, nn.ConvTranspose2d) else "conv"
        k, s, p = layer.kernel_size[0], layer.stride[0], layer.padding[0]
        return (kind, layer.in_channels, layer.out_channels, k, s, p)
    if isinstance(layer, nn.BatchNorm2d):
        return ("bn", layer.num_features)
    if isinstance(layer, nn.LeakyReLU):
        return ("lrelu", layer.negative_slope)
    raise AssertionError(f"unexpected layer {layer}")


def _down(i: int, o: int) -> list[tuple]:
    return [("conv", i, o, 3, 1, 1), ("lrelu", 0.01), ("conv", o, o, 4, 2, 1), ("lrelu", 0.01), ("bn", o)]


def _up(i: int, o: int) -> list[tuple]:
    conv = ("conv", o, o, 3, 1, 1)
    return [
        ("convT", i, o, 4, 2, 1),
        ("lrelu", 0.01),
        conv,
        ("lrelu", 0.01),
        conv,
        ("lrelu", 0.01),
        ("bn", o),
    ]


def test_coloru_layers_are_those_of_the_paper() -> None:
    module = ColorU(1)
    expected = {
        "dw1": _down(1, 16),
        "dw2": _down(16, 32),
        "dw3": _down(32, 64),
        "up1": _up(64, 32),
        "up2": _up(64, 16),
        "out": [
            ("convT", 32, 16, 4, 2, 1),
            ("lrelu", 0.01),
            ("conv", 16, 16, 3, 1, 1),
            ("lrelu", 0.01),
            ("conv", 16, 3, 1, 1, 0),
        ],
    }
    assert [name for name, _ in module.named_children()] == list(expected)
    for name, layers in expected.items():
        assert [_layer(layer) for layer in module.get_submodule(name).children()] == layers, name


def test_coloru_intermediate_sizes() -> None:
    module = ColorU(1)
    x = torch.rand(2, 1, 64, 64)
    x1 = module.dw1(x)
    x2 = module.dw2(x1)
    x3 = module.dw3(x2)
    assert (x1.shape, x2.shape, x3.shape) == ((2, 16, 32, 32), (2, 32, 16, 16), (2, 64, 8, 8))
    assert module.up1(x3).shape == (2, 32, 16, 16)


def test_deconv_upsampling_is_grouped_per_colour_without_bias() -> None:
    module = Deconv(1)
    deconv = module.deconv
    assert isinstance(deconv, nn.ConvTranspose2d)
    assert (deconv.groups, deconv.bias) == (3, None)
    assert (deconv.kernel_size, deconv.stride, deconv.padding) == ((8, 8), (4, 4), (2, 2))
    assert deconv.weight.shape == (3, 1, 8, 8)
    assert _layer(module.conv_last) == ("conv", 64, 3, 1, 1, 0)
    assert _layer(module.stem[0]) == ("conv", 1, 64, 7, 2, 2)
    assert isinstance(module.stem[3], nn.MaxPool2d) and len(module.resblocks) == 8


def test_pixelshuffle_starts_as_nearest_upsampling() -> None:
    torch.manual_seed(0)
    module = PixelShuffleColorizer(1)
    conv = module.shuffle[0]
    assert isinstance(conv, nn.Conv2d)
    weight = conv.weight.detach().view(3, 16, -1)
    assert torch.equal(weight, weight[:, :1].expand_as(weight))
    for mode in (True, False):  # batch statistics and running statistics
        module.train(mode)
        with torch.no_grad():
            shuffled = module.shuffle(module.resblocks(module.stem(torch.rand(2, 1, 32, 32))))
        assert shuffled.shape == (2, 3, 32, 32)
        nearest = shuffled[:, :, ::4, ::4].repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)
        torch.testing.assert_close(shuffled, nearest, rtol=0, atol=1e-6)
        assert not torch.allclose(shuffled[:, 0], shuffled[:, 1])


def test_parameter_counts() -> None:
    deconv, shuffle, coloru = Deconv(1), PixelShuffleColorizer(1), ColorU(1)
    assert (count(deconv), count(shuffle), count(coloru)) == (596_611, 599_440, 192_659)
    # the paper's "about 1/3"
    assert count(coloru) / count(deconv) == pytest.approx(0.3229, abs=5e-4)
    assert count(coloru) / count(shuffle) == pytest.approx(0.3214, abs=5e-4)
    assert count(Deconv(3)) - count(deconv) == 2 * 7 * 7 * 64


# --------------------------------------------------------------------------- classifier


def small_colorized() -> ColorizedClassifier:
    backbone = small_cnn(3, 2)
    return ColorizedClassifier(ColorU(1), backbone, backbone[-1])


def test_freezing_keeps_frozen_parts_in_eval_mode_but_not_the_head() -> None:
    model = small_colorized()
    assert model.head_name == "7"
    model.freeze(["backbone"]).train()
    batch_norm = model.backbone.get_submodule("0.1")
    assert isinstance(batch_norm, nn.BatchNorm2d)
    assert not model.backbone.training and not batch_norm.training
    assert model.head.training and model.colorizer.training
    trainable = set(map(id, model.trainable_parameters()))
    assert trainable == {id(p) for p in [*model.colorizer.parameters(), *model.head.parameters()]}
    model.freeze([]).train()
    assert all(module.training for module in model.modules())
    assert len(model.trainable_parameters()) == len(list(model.parameters()))


@pytest.mark.parametrize("with_head", [False, True])
def test_transfer_loads_module_and_backbone_and_the_head_on_request(with_head: bool) -> None:
    torch.manual_seed(0)
    source, target = small_colorized(), small_colorized()
    with torch.no_grad():
        for parameter in source.parameters():
            parameter.add_(1.0)
    head_before = {k: v.clone() for k, v in target.head.state_dict().items()}
    load_transferred(target, source.state_dict(), "source", with_head=with_head)
    head = head_keys(target)
    assert changed_keys(source, target) == (set() if with_head else head)
    if not with_head:
        assert all(torch.equal(v, head_before[k]) for k, v in target.head.state_dict().items())


# --------------------------------------------------------------------------- defenses


def test_defenses_are_registered() -> None:
    defenses = load_plugins(check=False).registries.defenses
    for name, cls in [
        ("colorize-deconv", DeconvColorization),
        ("colorize-pixelshuffle", PixelShuffleColorization),
        ("colorize-coloru", ColorUColorization),
    ]:
        defense = defenses.get(name)
        assert isinstance(defense, cls) and defense.kind == "training"


@pytest.mark.parametrize(
    "overrides",
    [
        {"stage": "everything"},
        {"source": "all", "stage": "last-layer", "reset_head": False},
        {"source": "color-module"},
        {"stage": "last-layer", "source": "last-layer"},
        {"stage": "last-layer", "source": " "},
    ],
)
def test_bad_settings_are_rejected(overrides: dict[str, object]) -> None:
    with pytest.raises(UsageError, match="colorize-deconv"):
        DeconvColorization().configured(overrides)


@pytest.mark.parametrize("defense", [DeconvColorization(), PixelShuffleColorization(), ColorUColorization()])
def test_color_module_stage_trains_only_the_module_and_the_head(defense: Defense, tmp_path: Path) -> None:
    defended = check_defense(defense, model=SmallCNN(), bundle=BUNDLE)
    model = colorized(defended)
    assert defended.normalization.mean == (0.5,) and defended.modules == {}
    torch.manual_seed(0)
    fresh_backbone = SmallCNN().build("classification", 3, BUNDLE.num_classes)
    head = {key.removeprefix("backbone.") for key in head_keys(model)}
    # the frozen backbone: parameters and BatchNorm buffers bit-identical
    assert changed_keys(fresh_backbone, model.backbone) == head
    assert parameter_keys(model.head, f"{model.head_name}.") == head
    before = untrained(defense, builder_for(tmp_path))
    assert changed_keys(before.backbone, model.backbone) == head
    changed = changed_keys(before.colorizer, model.colorizer)
    assert parameter_keys(model.colorizer) <= changed  # every parameter of T moved
    assert any("running_mean" in key for key in changed)


def test_last_layer_and_all_stages(tmp_path: Path) -> None:
    builder = builder_for(tmp_path)
    defense = DeconvColorization()
    last = colorized(builder.build([defense.configured({"stage": "last-layer"})]))
    # trained on the way, and memoised by the builder
    color_module = colorized(builder.build([defense]))
    everything = colorized(builder.build([defense.configured({"stage": "all"})]))
    assert len(builder.trained) == 3
    head = head_keys(last)

    # last-layer: T and E are those of stage all, bit for bit; only the head changed
    assert changed_keys(everything, last) == head
    assert changed_keys(untrained(defense, builder).head, last.head) == set(last.head.state_dict())

    # all: every parameter of T, E and C moved away from the color-module result
    assert parameter_keys(everything) <= changed_keys(color_module, everything)


def test_last_layer_from_a_cache_file_of_another_dataset(tmp_path: Path) -> None:
    builder = builder_for(tmp_path / "first")
    defense = ColorUColorization()
    source = colorized(builder.build([defense]))
    path = builder.cache.path(builder.cache_key([defense]))
    assert path.is_file()

    other = tiny_bundle(size=32, classes=3, seed=1)
    transferred = defense.configured({"stage": "last-layer", "source": str(path)})
    model = colorized(check_defense(transferred, model=SmallCNN(), bundle=other))
    head = head_keys(model)
    expected = {k: v for k, v in source.state_dict().items() if k not in head}
    actual = {k: v for k, v in model.state_dict().items() if k not in head}
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[key], actual[key]) for key in expected)
    assert model.head.out_features == 3

    wrong_module = DeconvColorization().configured({"stage": "last-layer", "source": str(path)})
    with pytest.raises(UsageError, match="does not fit"):
        check_defense(wrong_module, model=SmallCNN(), bundle=other)


def test_last_layer_from_a_missing_file_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "model.pt"
    defense = PixelShuffleColorization().configured({"stage": "last-layer", "source": str(missing)})
    with pytest.raises(UsageError, match=re.escape(str(missing))):
        check_defense(defense, model=SmallCNN(), bundle=BUNDLE)


def test_last_layer_from_a_file_that_is_not_a_cache_entry(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    defense = PixelShuffleColorization().configured({"stage": "last-layer", "source": str(path)})
    with pytest.raises(UsageError, match=re.escape(str(path))):
        check_defense(defense, model=SmallCNN(), bundle=BUNDLE)


def test_coloru_defense_rejects_sizes_not_divisible_by_8() -> None:
    with pytest.raises(UsageError, match="divisible by 8"):
        check_defense(ColorUColorization(), model=SmallCNN(), bundle=tiny_bundle(size=36))


def test_visualize_shows_the_colorized_images(tmp_path: Path) -> None:
    defense = DeconvColorization()
    x = torch.stack([BUNDLE.test[i][0] for i in range(4)])
    defended = defense.build(Context(builder_for(tmp_path), [defense])).eval()
    rows = defense.visualize(defended, x)["colorized"]
    assert len(rows) == 2 and torch.equal(rows[0], x)
    colors = rows[1]
    assert colors.shape == (4, 3, 32, 32)
    assert float(colors.min()) >= 0 and float(colors.max()) <= 1
    assert torch.allclose(colors.amax(dim=(1, 2, 3)), torch.ones(4))
    assert torch.allclose(colors.amin(dim=(1, 2, 3)), torch.zeros(4))


def test_a_changed_source_file_changes_the_cache_identity(tmp_path: Path) -> None:
    from medbench_colorization.defense import DeconvColorization

    source = tmp_path / "entry.pt"
    source.write_bytes(b"first")
    defense = DeconvColorization().configured({"stage": "last-layer", "source": str(source)})
    first = defense.cache_identity()
    source.write_bytes(b"second")
    assert defense.cache_identity() != first
    assert DeconvColorization().configured({"stage": "all"}).cache_identity() == {}
