"""Weights of the built-in models: local files, local ImageNet weights, errors, no network."""

from __future__ import annotations

import re
import socket
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
from torch import nn

from medbench.building.cache import file_sha256
from medbench.errors import UsageError
from medbench_models import weights as weights_module
from medbench_models.smallcnn import SmallCNN
from medbench_models.torchvision_backbones import TorchvisionBackbone
from medbench_models.weights import (
    WEIGHTS_DIR_ENV,
    imagenet_filename,
    load_state_strict,
    resolve_weights,
)


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the torch hub cache at an empty folder and unset the weights folder."""
    torch_home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.delenv(WEIGHTS_DIR_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setattr(weights_module, "_verified", set())
    return torch_home


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every way of reaching the network fail loudly."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def fake_checkpoint(arch: str, folder: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, Any]]:
    """Save a random torchvision-style (3 channels, 1000 classes) checkpoint of ``arch``.

    Its name carries the prefix of its real sha256, and the expected file name is
    monkeypatched to it (the real name's hash cannot match a fake file).
    """
    torch.manual_seed(0)
    state = torchvision.models.get_model(arch, weights=None).state_dict()
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / "staging.pth"
    torch.save(state, staging)
    path = folder / f"{arch}-{file_sha256(staging)[:8]}.pth"
    staging.rename(path)
    monkeypatch.setattr(weights_module, "imagenet_filename", lambda arch_, name="imagenet": path.name)
    return path, state


def outputs(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    module.eval()
    with torch.no_grad():
        return module(x)


# --------------------------------------------------------------------------- local files


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "module_prefix"])
def test_smallcnn_local_file_round_trip(tmp_path: Path, wrap: str) -> None:
    model = SmallCNN()
    built = model.build("classification", 1, 3)
    with torch.no_grad():
        for buffer in built.buffers():  # make the BN statistics non-trivial
            if buffer.is_floating_point():
                buffer.uniform_(0.5, 1.5)
    state = built.state_dict()
    saved: Any = {
        "plain": state,
        "state_dict": {"state_dict": state, "epoch": 3},
        "model": {"model": state, "denoiser": {}},
        "module_prefix": {f"module.{k}": v for k, v in state.items()},
    }[wrap]
    path = tmp_path / "smallcnn.pt"
    torch.save(saved, path)

    loaded = model.build("classification", 1, 3, weights=str(path))
    x = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(outputs(loaded, x), outputs(built, x), rtol=0, atol=0)
    assert not any(t.is_meta for t in [*loaded.parameters(), *loaded.buffers()])
    assert all(p.requires_grad for p in loaded.parameters())


@pytest.mark.parametrize("name", ["resnet18", "vgg16"])
def test_backbone_local_file_round_trip(tmp_path: Path, name: str) -> None:
    model = TorchvisionBackbone(name)
    built = model.build("classification", 1, 2)
    path = tmp_path / f"{name}.pth"
    torch.save({"state_dict": built.state_dict()}, path)
    loaded = model.build("classification", 1, 2, weights=path)  # type: ignore[arg-type]
    x = torch.rand(1, 1, 32, 32)
    torch.testing.assert_close(outputs(loaded, x), outputs(built, x), rtol=0, atol=0)


def test_local_file_mismatch_lists_keys(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    state = SmallCNN().build("classification", 1, 2).state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["0.0.weight"]
    torch.save(state, path)
    with pytest.raises(UsageError) as caught:
        SmallCNN().build("classification", 1, 2, weights=str(path))
    message = str(caught.value)
    assert "missing 1 keys [0.0.weight]" in message and "unexpected 1 keys [extra.weight]" in message
    assert "\n" not in message


def test_local_file_shape_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "three_classes.pt"
    torch.save(SmallCNN().build("classification", 1, 3).state_dict(), path)
    with pytest.raises(UsageError, match="shape mismatch"):
        SmallCNN().build("classification", 1, 2, weights=str(path))


def test_whole_model_pickles_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "whole.pt"
    torch.save(SmallCNN().build("classification", 1, 2), path)
    with pytest.raises(UsageError, match="weights_only"):
        SmallCNN().build("classification", 1, 2, weights=str(path))


def test_missing_file_and_unknown_names(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not found"):
        SmallCNN().build("classification", 1, 2, weights=str(tmp_path / "nope.pt"))
    with pytest.raises(UsageError, match=r"unknown weights 'imagenett'.*did you mean 'imagenet'"):
        TorchvisionBackbone("resnet18").build("classification", 1, 2, weights="imagenett")
    with pytest.raises(UsageError, match="unknown weights"):
        SmallCNN().build("classification", 1, 2, weights="pretrained")
    with pytest.raises(UsageError, match=r"smallcnn.*no 'imagenet' weights"):
        SmallCNN().build("classification", 1, 2, weights="imagenet")


def test_resolve_weights() -> None:
    assert resolve_weights(None, owner="m").kind == "none"
    assert resolve_weights("None", owner="m").kind == "none"
    assert resolve_weights("ImageNet", owner="m", named={"imagenet"}).name == "imagenet"


def test_load_state_strict_on_meta_module() -> None:
    source = nn.Linear(3, 2)
    with torch.device("meta"):
        target = nn.Linear(3, 2)
    load_state_strict(target, {k: v.double() for k, v in source.state_dict().items()}, source="s", owner="o")
    assert target.weight.dtype == torch.float32 and not target.weight.is_meta
    torch.testing.assert_close(target.weight, source.weight)


# --------------------------------------------------------------------------- imagenet


def test_imagenet_file_names_come_from_torchvision_urls() -> None:
    assert imagenet_filename("resnet18") == "resnet18-f37072fd.pth"
    assert imagenet_filename("resnet50") == "resnet50-11ad3fa6.pth"
    assert imagenet_filename("resnet50", "imagenet1k_v1") == "resnet50-0676ba61.pth"
    assert imagenet_filename("densenet121") == "densenet121-a639ec97.pth"
    assert imagenet_filename("vgg16") == "vgg16-397923af.pth"
    assert TorchvisionBackbone("resnet50").weight_names() == {"imagenet", "imagenet1k_v1", "imagenet1k_v2"}
    assert TorchvisionBackbone("vgg16").weight_names() == {"imagenet", "imagenet1k_v1"}


def test_imagenet_from_weights_dir_sums_rgb_kernels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    path, state = fake_checkpoint("resnet18", tmp_path / "weights", monkeypatch)
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(path.parent))
    model = TorchvisionBackbone("resnet18")

    gray = model.build("classification", 1, 2, weights="imagenet")
    torch.testing.assert_close(gray.conv1.weight, state["conv1.weight"].sum(dim=1, keepdim=True))
    torch.testing.assert_close(gray.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    torch.testing.assert_close(gray.bn1.running_var, state["bn1.running_var"])
    assert [type(m) for m in gray.fc] == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert all(p.requires_grad and not p.is_meta for p in gray.parameters())
    assert outputs(gray, torch.rand(1, 1, 32, 32)).shape == (1, 2)

    rgb = model.build("classification", 3, 2, weights="imagenet")
    torch.testing.assert_close(rgb.conv1.weight, state["conv1.weight"])
    # a gray image through the 1-channel model equals (g, g, g) through the RGB one, up to the head
    g = torch.rand(1, 1, 32, 32)
    gray.fc, rgb.fc = nn.Identity(), nn.Identity()
    torch.testing.assert_close(outputs(gray, g), outputs(rgb, g.expand(1, 3, 32, 32)), rtol=1e-4, atol=1e-5)


def test_imagenet_from_hub_cache(
    isolated_caches: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    fake_checkpoint("resnet18", isolated_caches / "hub" / "checkpoints", monkeypatch)
    module = TorchvisionBackbone("resnet18").build("classification", 1, 2, weights="imagenet")
    assert module.conv1.in_channels == 1


def test_imagenet_densenet_legacy_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    state = torchvision.models.densenet121(weights=None).state_dict()
    # torchvision's published DenseNet files use the old key names: norm.1 rather than norm1
    # and were saved before BatchNorm had a num_batches_tracked counter
    legacy = {
        re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", k): v
        for k, v in state.items()
        if not k.endswith("num_batches_tracked")
    }
    assert "features.denseblock1.denselayer1.norm.1.weight" in legacy
    folder = tmp_path / "weights"
    folder.mkdir()
    staging = folder / "staging.pth"
    torch.save(legacy, staging)
    path = staging.rename(folder / f"densenet121-{file_sha256(staging)[:8]}.pth")
    monkeypatch.setattr(weights_module, "imagenet_filename", lambda arch, name="imagenet": path.name)
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(folder))
    module = TorchvisionBackbone("densenet121").build("classification", 1, 2, weights="imagenet")
    torch.testing.assert_close(
        module.features.denseblock1.denselayer1.norm1.weight,
        state["features.denseblock1.denselayer1.norm1.weight"],
    )
    torch.testing.assert_close(
        module.features.conv0.weight, state["features.conv0.weight"].sum(dim=1, keepdim=True)
    )


def test_missing_imagenet_names_paths_in_one_line(
    isolated_caches: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(tmp_path / "mine"))
    with pytest.raises(UsageError) as caught:
        TorchvisionBackbone("resnet18").build("classification", 1, 2, weights="imagenet")
    message = str(caught.value)
    assert "\n" not in message
    assert "resnet18-f37072fd.pth" in message
    assert str(isolated_caches / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert str(tmp_path / "mine" / "resnet18-f37072fd.pth") in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message


def test_hash_mismatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None) -> None:
    path, _ = fake_checkpoint("resnet18", tmp_path / "weights", monkeypatch)
    wrong = "0" * 8 if not path.name.startswith("resnet18-0") else "f" * 8
    bad = path.rename(path.with_name(f"resnet18-{wrong}.pth"))
    monkeypatch.setattr(weights_module, "imagenet_filename", lambda arch, name="imagenet": bad.name)
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(bad.parent))
    with pytest.raises(UsageError, match="sha256") as caught:
        TorchvisionBackbone("resnet18").build("classification", 1, 2, weights="imagenet")
    assert "\n" not in str(caught.value)


def test_smallcnn_rejects_imagenet_without_touching_disk_or_network(no_network: None) -> None:
    with pytest.raises(UsageError, match="imagenet"):
        SmallCNN().build("classification", 3, 2, weights="imagenet")
