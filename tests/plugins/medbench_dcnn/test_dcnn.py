"""The denoising CNN defense ``dcnn`` and the pixel-denoiser baselines ``reformer`` and ``hgd``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from medbench.api import DatasetBundle, DefendedModel, Defense, Model, Normalization, Task
from medbench.building.cache import ModelCache
from medbench.building.defending import DefenseBuilder
from medbench.config.spec import TrainingSettings
from medbench.errors import UsageError
from medbench.plugins.host import load_plugins
from medbench.testing import check_defense, tiny_bundle
from medbench.wrapping.estimators import classifier_estimator
from medbench.wrapping.forward import defended_logits, normalize
from medbench_dcnn.dcnn import DCNN
from medbench_dcnn.decoder import Decoder
from medbench_dcnn.denoising import DenoiserPreprocessor, without_denoiser
from medbench_dcnn.hgd import HGD, UNetDenoiser, lgd_loss
from medbench_dcnn.loss import DCNNLoss, uniform_noisy
from medbench_dcnn.reformer import MagNetAutoEncoder, Reformer
from medbench_dcnn.settings import DCNNSettings
from medbench_dcnn.taps import probe_tap, resolve_tap

NORMALIZATION = Normalization((0.5,), (0.25,))


@pytest.fixture(scope="module")
def registries() -> Any:
    return load_plugins(check=False).registries


class _TapNet(nn.Module):
    """Stride-4 stage ``stage``, head ``fc``; batch norm and dropout to make modes matter."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 4, 3, 2, 1), nn.BatchNorm2d(4), nn.ReLU())
        self.stage = nn.Sequential(nn.Conv2d(4, 8, 3, 2, 1), nn.ReLU())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.fc = nn.Sequential(nn.Dropout(0.5), nn.Linear(32, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.stage(self.stem(x))))


class TapNet(Model):
    """A tiny model of an architecture ``dcnn`` does not know (it needs ``tap=stage``)."""

    name = "dcnn-test-tapnet"

    def normalization(self, in_channels: int) -> Normalization:
        return NORMALIZATION.for_channels(in_channels)

    def build(self, task: Task, in_channels: int, num_classes: int, weights: str | None = None) -> nn.Module:
        return _TapNet(in_channels, num_classes)


def _builder(registries: Any, model: Model, bundle: DatasetBundle, directory: Path) -> DefenseBuilder:
    return DefenseBuilder(
        dataset=bundle,
        model_name=model.name,
        model=model,
        weights=None,
        standard=registries.defenses.get("none"),
        training=TrainingSettings(epochs=1, batch_size=16),
        device=torch.device("cpu"),
        seed=0,
        cache=ModelCache(directory),
    )


def _no_hooks(module: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in module.modules())


def _tapnet_loss(settings: DCNNSettings, seed: int = 0) -> tuple[DefendedModel, DCNNLoss]:
    torch.manual_seed(seed)
    net = _TapNet(1, 2)
    decoder = Decoder(8, 1)
    defended = DefendedModel(net, NORMALIZATION, modules={"decoder": decoder})
    loss = DCNNLoss(settings, tap=net.stage, head=net.fc, decoder=decoder, criterion=nn.CrossEntropyLoss())
    return defended, loss


def _batch(n: int = 3, copies: int = 2, size: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(n, 1, size, size, generator=generator)
    y = torch.arange(n) % 2
    return x, y, uniform_noisy(x, 0.2, copies, generator)


# --------------------------------------------------------------------------- dcnn: parts


def test_registered(registries: Any) -> None:
    kinds = {name: registries.defenses.get(name).kind for name in ("dcnn", "reformer", "hgd")}
    assert kinds == {"dcnn": "training", "reformer": "preprocessing", "hgd": "preprocessing"}


def test_settings_are_validated() -> None:
    with pytest.raises(UsageError, match="variant"):
        DCNN().configured({"variant": "bogus"})
    with pytest.raises(UsageError, match="noisy_copies"):
        DCNN().configured({"noisy_copies": 0})
    assert DCNN().configured({"variant": "code"}).settings.variant == "code"


def test_uniform_noise_stays_in_range_and_budget() -> None:
    x = torch.rand(4, 1, 8, 8)
    noisy = uniform_noisy(x, 0.2, 3, torch.Generator().manual_seed(0))
    assert noisy.shape == (3, 4, 1, 8, 8)
    assert float(noisy.min()) >= 0 and float(noisy.max()) <= 1
    assert float((noisy - x).abs().max()) <= 0.2 + 1e-6
    assert torch.equal(uniform_noisy(x, 0.0, 2), x.expand(2, -1, -1, -1, -1))


def test_decoder_restores_the_input_size_in_open_unit_interval() -> None:
    decoder = Decoder(64, 1)
    image = decoder(torch.randn(2, 64, 8, 8) * 5, (32, 32))
    assert image.shape == (2, 1, 32, 32)
    assert float(image.detach().abs().max()) < 1
    resized = Decoder(256, 3)(torch.randn(2, 256, 8, 8), (30, 30))
    assert resized.shape == (2, 3, 30, 30) and float(resized.detach().abs().max()) < 1


@pytest.mark.parametrize(
    ("name", "path", "channels"),
    [
        ("resnet18", "layer1", 64),
        ("resnet50", "layer1", 256),
        ("vgg16", "features.9", 128),
        ("densenet121", "features.denseblock1", 256),
    ],
)
def test_taps_of_the_torchvision_backbones(registries: Any, name: str, path: str, channels: int) -> None:
    module = registries.models.get(name).build("classification", 1, 2, None)
    assert resolve_tap(module) == path
    shape = probe_tap(module, path, (1, 32, 32), torch.device("cpu"))
    assert (shape.channels, shape.size, shape.stride) == (channels, (8, 8), 4)
    assert module.training, "probing must restore the training mode"
    assert _no_hooks(module)
    decoder = Decoder(shape.channels, 1).eval()
    assert decoder(torch.randn(2, channels, 8, 8), (32, 32)).shape == (2, 1, 32, 32)


def test_unknown_architecture_needs_the_tap_setting() -> None:
    module = _TapNet(1, 2)
    with pytest.raises(UsageError, match="'tap' setting"):
        resolve_tap(module)
    with pytest.raises(UsageError, match="tap='nope'"):
        resolve_tap(module, "nope")
    assert resolve_tap(module, "stage") == "stage"


def test_loss_leaves_no_hooks_behind() -> None:
    defended, loss = _tapnet_loss(DCNNSettings())
    x, y, _ = _batch()
    defended.model.train()
    loss(defended, x, y).backward()
    assert _no_hooks(defended.model)
    defended.model.eval()
    assert torch.equal(defended_logits(defended, x), defended.model(normalize(x, NORMALIZATION)))


def test_zero_lambdas_give_the_cross_entropy_of_the_concatenated_batch() -> None:
    defended, loss = _tapnet_loss(DCNNSettings(lambda_n=0.0, lambda_a=0.0))
    defended.eval()
    x, y, noisy = _batch()
    terms = loss.terms(defended, x, y, noisy)
    batch = torch.cat([x, noisy[0], noisy[1]])
    expected = F.cross_entropy(defended.model(normalize(batch, NORMALIZATION)), y.repeat(3))
    assert torch.equal(terms.total, terms.classification)
    assert torch.allclose(terms.total, expected, atol=1e-6)


def test_neighbor_loss_vanishes_without_noise() -> None:
    defended, loss = _tapnet_loss(DCNNSettings(sigma=0.0))
    defended.model.train()  # batch-norm statistics over the whole batch
    x, y, _ = _batch()
    noisy = uniform_noisy(x, 0.0, 3)
    assert float(loss.terms(defended, x, y, noisy).neighbor.detach()) == pytest.approx(0.0, abs=1e-6)


def _hand_parts(defended: DefendedModel, decoder: Decoder) -> Any:
    """Features and reconstructions one image at a time (eval mode: batch-independent)."""
    net = defended.model
    assert isinstance(net, _TapNet)

    def parts(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        code = net.stage(net.stem(normalize(image[None], NORMALIZATION)))
        return net.pool(code)[0], decoder(code, (16, 16))[0]

    return parts


def test_paper_variant_matches_equations_1_and_2() -> None:
    defended, loss = _tapnet_loss(DCNNSettings(variant="paper", lambda_n=0.5, lambda_a=2.0))
    defended.eval()
    x, y, noisy = _batch(n=3, copies=2)
    terms = loss.terms(defended, x, y, noisy)
    parts = _hand_parts(defended, loss.decoder)
    neighbor, clean_rec, noisy_rec = [], [], []
    for i in range(3):
        f_clean, rec_clean = parts(x[i])
        target = 2 * x[i] - 1
        clean_rec.append(((target - rec_clean) ** 2).sum().sqrt())
        for k in range(2):
            f_noisy, rec_noisy = parts(noisy[k, i])
            neighbor.append(((f_clean - f_noisy) ** 2).sum().sqrt())
            noisy_rec.append(((target - rec_noisy) ** 2).sum().sqrt())
    expected_n = torch.stack(neighbor).mean()
    expected_a = torch.stack(clean_rec).mean() + torch.stack(noisy_rec).mean()
    assert torch.allclose(terms.neighbor, expected_n, atol=1e-5)
    assert torch.allclose(terms.reconstruction, expected_a, atol=1e-4)
    expected_total = terms.classification + 0.5 * expected_n + 2.0 * expected_a
    assert torch.allclose(terms.total, expected_total, atol=1e-4)


def test_code_variant_uses_mse_on_the_noisy_part() -> None:
    defended, loss = _tapnet_loss(DCNNSettings(variant="code"))
    defended.eval()
    x, y, noisy = _batch(n=2, copies=2)
    terms = loss.terms(defended, x, y, noisy)
    parts = _hand_parts(defended, loss.decoder)
    squares_n, squares_a = [], []
    for i in range(2):
        f_clean, _ = parts(x[i])
        for k in range(2):
            f_noisy, rec_noisy = parts(noisy[k, i])
            squares_n.append((f_noisy - f_clean) ** 2)
            squares_a.append((rec_noisy - (2 * x[i] - 1)) ** 2)
    assert torch.allclose(terms.neighbor, torch.stack(squares_n).mean(), atol=1e-6)
    assert torch.allclose(terms.reconstruction, torch.stack(squares_a).mean(), atol=1e-5)


def test_code_variant_detaches_the_clean_features() -> None:
    defended, loss = _tapnet_loss(DCNNSettings(variant="code", lambda_a=0.0))
    defended.eval()
    x, y, noisy = _batch(n=2, copies=1)
    clean = x.clone().requires_grad_(True)
    loss.terms(defended, clean, y, noisy).neighbor.backward()
    assert clean.grad is None or float(clean.grad.abs().max()) == 0.0


# --------------------------------------------------------------------------- dcnn: training


def test_dcnn_trains_on_resnet18(registries: Any) -> None:
    bundle = tiny_bundle(n=16, size=32)
    defended = check_defense(DCNN(), model=registries.models.get("resnet18"), bundle=bundle)
    assert isinstance(defended.modules["decoder"], Decoder)
    assert _no_hooks(defended.model) and _no_hooks(defended.modules["decoder"])
    x = torch.stack([bundle.test[i][0] for i in range(4)])
    with torch.no_grad():
        plain = defended.model(normalize(x, defended.normalization))
        assert torch.equal(defended_logits(defended, x), plain)
        reconstruction = DCNN().reconstruct(defended, x)
    assert reconstruction.shape == x.shape and float(reconstruction.abs().max()) < 1
    rows = DCNN().visualize(defended, x)["dcnn-reconstruction"]
    assert all(row.shape == x.shape for row in rows)


def test_dcnn_with_a_tap_setting_and_the_code_variant(tmp_path: Path, registries: Any) -> None:
    bundle = tiny_bundle(n=16, size=16)
    with pytest.raises(UsageError, match="'tap' setting"):
        _builder(registries, TapNet(), bundle, tmp_path / "a").build([DCNN()])
    defense = DCNN().configured({"tap": "stage", "variant": "code"})
    defended = _builder(registries, TapNet(), bundle, tmp_path / "b").build([defense])
    first = defended.modules["decoder"].get_submodule("inv_layer0.0")
    assert isinstance(first, nn.ConvTranspose2d) and first.in_channels == 8


# --------------------------------------------------------------------------- pixel denoisers


def test_reformer_autoencoder_outputs_images_in_unit_interval() -> None:
    for size in (16, 15):
        x = torch.rand(2, 3, size, size)
        with torch.no_grad():
            out = MagNetAutoEncoder(3, 16)(x)
        assert out.shape == x.shape
        assert float(out.min()) > 0 and float(out.max()) < 1


def test_hgd_reconstruction_is_input_minus_predicted_noise() -> None:
    x = torch.rand(2, 1, 16, 16)
    denoiser = UNetDenoiser(1, 8).eval()
    assert torch.equal(denoiser(x), x), "the untrained denoiser predicts no noise"
    nn.init.normal_(denoiser.out.weight)
    noise = denoiser.noise(x)
    assert float(noise.detach().abs().max()) > 0
    assert torch.allclose(denoiser(x), x - noise)
    odd = torch.rand(2, 1, 15, 15)
    assert denoiser(odd).shape == odd.shape


def test_lgd_loss_is_mean_l1_distance_of_logits() -> None:
    a, b = torch.tensor([[1.0, -2.0], [0.0, 0.5]]), torch.tensor([[0.0, 0.0], [1.0, 0.5]])
    assert float(lgd_loss(a, b)) == pytest.approx((3.0 + 1.0) / 2)


def _states(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("defense", [Reformer(), HGD().configured({"width": 4})], ids=["reformer", "hgd"])
def test_denoisers_train_only_themselves(tmp_path: Path, registries: Any, defense: Defense) -> None:
    bundle = tiny_bundle(n=16, size=16)
    builder = _builder(registries, TapNet(), bundle, tmp_path)
    base = builder.build([])
    before = _states(base.model)
    defended = builder.build([defense])
    assert defended.model is base.model
    assert isinstance(defended.preprocessors[0], DenoiserPreprocessor)
    denoiser = defended.modules[defense.name]
    assert defended.preprocessors[0].denoiser is denoiser
    after = _states(base.model)
    assert all(torch.equal(before[k], after[k]) for k in before), "the base classifier changed"
    assert all(p.requires_grad for p in base.model.parameters()), "parameter flags not restored"
    if isinstance(denoiser, UNetDenoiser):
        assert float(denoiser.out.weight.detach().abs().max()) > 0, "the denoiser did not train"
    x = torch.stack([bundle.test[i][0] for i in range(4)])
    with torch.no_grad():
        expected = defended_logits(base, denoiser(x))
        assert torch.equal(defended_logits(defended, x), expected)
        rows = defense.visualize(defended, x)[defense.name]
    assert float(rows[1].min()) >= 0 and float(rows[1].max()) <= 1


@pytest.fixture(scope="module")
def resnet_builder(tmp_path_factory: pytest.TempPathFactory, registries: Any) -> DefenseBuilder:
    """One builder for the chains, so that ``dcnn`` is trained once (resnet18, 32x32 gray images)."""
    resnet18 = registries.models.get("resnet18")
    return _builder(registries, resnet18, tiny_bundle(n=16, size=32), tmp_path_factory.mktemp("chains"))


@pytest.mark.parametrize(
    "denoiser",
    [Reformer(), pytest.param(HGD().configured({"width": 8}), marks=pytest.mark.slow)],
    ids=["reformer", "hgd"],
)
def test_denoiser_in_front_of_dcnn_gives_gradients_through_both(
    resnet_builder: DefenseBuilder, denoiser: Defense
) -> None:
    builder, bundle = resnet_builder, resnet_builder.dataset
    defended = builder.build([denoiser, DCNN()])
    inner = builder.build([DCNN()])
    assert defended.model is inner.model
    assert isinstance(defended.preprocessors[0], DenoiserPreprocessor)
    assert defended.preprocessors[1:] == inner.preprocessors
    assert set(defended.modules) == {"decoder", denoiser.name}
    assert defended.modules["decoder"] is inner.modules["decoder"]
    assert "dcnn" in builder.trained
    assert any(label.startswith(denoiser.name) and label.endswith("+dcnn") for label in builder.trained)

    x = torch.stack([bundle.test[i][0] for i in range(4)])
    y = torch.stack([bundle.test[i][1] for i in range(4)])
    estimator = classifier_estimator(defended, bundle, torch.device("cpu"))
    one_hot = F.one_hot(y, bundle.num_classes).float().numpy()  # ART's binary case wants one-hot labels
    gradient = torch.from_numpy(estimator.loss_gradient(x.numpy(), one_hot))
    assert torch.isfinite(gradient).all() and float(gradient.abs().max()) > 0

    def autograd_gradient(model: DefendedModel) -> torch.Tensor:
        z = x.clone().requires_grad_(True)
        F.cross_entropy(defended_logits(model, z), y).backward()
        assert z.grad is not None
        return z.grad

    # ART's gradient is the exact one through the denoiser, not the classifier's alone
    assert torch.allclose(gradient, autograd_gradient(defended), atol=1e-6)
    assert not torch.allclose(gradient, autograd_gradient(without_denoiser(defended)), atol=1e-6)
