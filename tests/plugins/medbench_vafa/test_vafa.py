"""VAFA: range, constant slices, q bounds and step sizes, both variants, the ART interface."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from medbench.api import DefendedModel, Normalization
from medbench.measuring.segmentation_metrics import dice_ce_loss
from medbench.wrapping.segmentation import SegmentationEstimator
from medbench_vafa.art_attack import VAFA, VAFA2D
from medbench_vafa.vafa import VAFAConfig, forward_transform, reconstruct, to_unit_range, vafa
from medbench_vafa.vaft import frequency_consistency


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv3d(4, 3, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@pytest.fixture
def net() -> torch.nn.Module:
    torch.manual_seed(0)
    net = _Net().eval()
    with torch.no_grad():  # a sensitive network: its loss reacts to small input changes
        net.body[0].weight.mul_(20)
        net.body[2].weight.mul_(5)
    return net


def _gradient(net: torch.nn.Module):  # type: ignore[no-untyped-def]
    def gradient(x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x_adv = x_adv.requires_grad_(True)
        return torch.autograd.grad(dice_ce_loss(net(x_adv), y), x_adv)[0]

    return gradient


def _volumes(constant_slice: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(2, 1, 16, 16, 16, generator=generator) * 0.6 + 0.2
    if constant_slice:
        x[0, 0, 3] = 0.4
        x[1] = 0.7  # a volume where every slice is constant
    y = torch.randint(0, 3, (2, 16, 16, 16), generator=generator)
    return x, y


@pytest.mark.parametrize("variant", ["paper", "code"])
def test_q_stays_in_bounds_and_moves_at_most_one_per_step(net: torch.nn.Module, variant: str) -> None:
    x, y = _volumes()
    config = VAFAConfig(q_max=6, steps=7, variant=variant)  # type: ignore[arg-type]
    low, high = config.bounds
    tables = [torch.full_like(forward_transform(x, config.block), config.q_init)]
    result = vafa(_gradient(net), x, y, config, on_step=lambda q: tables.append(q.clone()))
    assert len(tables) == 8
    for before, after in itertools.pairwise(tables):
        assert after.min() >= low and after.max() <= high
        assert (after - before).abs().max() <= 1.0
    assert torch.equal(result.q, tables[-1])
    assert (low, high) == ((1.0, 6.0) if variant == "paper" else (5.0, 6.0))
    assert float(tables[-1].max()) > config.q_init or float(tables[-1].min()) < config.q_init


@pytest.mark.parametrize("variant", ["paper", "code"])
def test_output_in_unit_range_without_nan_on_constant_slices(net: torch.nn.Module, variant: str) -> None:
    x, y = _volumes()
    result = vafa(_gradient(net), x, y, VAFAConfig(q_max=30, steps=4, variant=variant))  # type: ignore[arg-type]
    assert torch.isfinite(result.x_adv).all()
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    assert result.x_adv.shape == x.shape


def test_renormalisation_guards_constant_slices() -> None:
    volume = torch.rand(1, 1, 3, 8, 8) * 255
    volume[0, 0, 1] = 100.0
    volume[0, 0, 2] = 100.0 + 1e-4 * torch.rand(8, 8)  # round-off ripple on a flat slice
    out = to_unit_range(volume, renormalize=True)
    assert torch.isfinite(out).all()
    assert torch.allclose(out[0, 0, 1:], torch.full((2, 8, 8), 100 / 255), atol=1e-6)
    assert out[0, 0, 0].min() == 0 and out[0, 0, 0].max() == 1  # ordinary slices are stretched


def test_no_quantization_reproduces_the_volume() -> None:
    x, _ = _volumes(constant_slice=False)
    coefficients = forward_transform(x, (8, 8, 8))
    tiny = torch.full_like(coefficients, 1e-3)
    assert torch.allclose(reconstruct(coefficients, tiny, (16, 16, 16), 3, None, False), x, atol=1e-4)
    # q = 1 with exact rounding rounds the DCT coefficients only: below 1/255 on average
    ones = torch.ones_like(coefficients)
    rounded = reconstruct(coefficients, ones, (16, 16, 16), 3, None, False)
    assert (rounded - x).abs().mean() < 1 / 255


def test_vafa_raises_the_loss(net: torch.nn.Module) -> None:
    x, _ = _volumes(constant_slice=False)
    with torch.no_grad():
        y = net(x).argmax(dim=1)  # the model's own prediction: the clean loss is low
    # the code's variant: tables start at q_max (the paper's start at 1 and barely move in 10 steps)
    config = VAFAConfig(q_max=30, steps=10, variant="code", renormalize=False)
    result = vafa(_gradient(net), x, y, config)
    with torch.no_grad():
        assert dice_ce_loss(net(result.x_adv), y) > dice_ce_loss(net(x), y) + 1e-3


def test_code_variant_returns_the_last_soft_step_before_the_update(net: torch.nn.Module) -> None:
    x, y = _volumes(constant_slice=False)
    config = VAFAConfig(q_max=20, steps=3, variant="code")
    tables: list[torch.Tensor] = [torch.full_like(forward_transform(x, config.block), 20.0)]
    result = vafa(_gradient(net), x, y, config, on_step=lambda q: tables.append(q.clone()))
    expected = reconstruct(
        forward_transform(x, config.block), tables[-2], (16, 16, 16), 3, 0.1 - 2 * 0.1 / 3, True
    )
    assert torch.allclose(result.x_adv, expected, atol=1e-5)


def test_art_attack_on_the_segmentation_estimator(net: torch.nn.Module) -> None:
    estimator = SegmentationEstimator(
        DefendedModel(net, Normalization((0.0,), (1.0,))),
        nb_classes=3,
        input_shape=(1, 16, 16, 16),
        device=torch.device("cpu"),
    )
    x, y = _volumes()
    attack = VAFA(estimator, q_max=20, steps=3, block_size=(8, 8, 8), batch_size=1)
    x_adv = attack.generate(x.numpy(), y.numpy())
    assert isinstance(x_adv, np.ndarray) and x_adv.shape == x.shape
    assert attack.q_tables is not None and attack.q_tables.shape == (2, 1, 8, 8, 8, 8)
    # y=None attacks the model's own prediction
    assert attack.generate(x.numpy()).shape == x.shape
    slicewise = VAFA2D(estimator, steps=2)
    assert slicewise.generate(x.numpy(), y.numpy()).shape == x.shape
    assert slicewise.q_tables is not None and slicewise.q_tables.shape == (2, 1, 16, 4, 8, 8)


def test_bad_parameters_are_rejected(net: torch.nn.Module) -> None:
    estimator = SegmentationEstimator(
        DefendedModel(net, Normalization((0.0,), (1.0,))),
        nb_classes=3,
        input_shape=(1, 16, 16, 16),
        device=torch.device("cpu"),
    )
    with pytest.raises(ValueError, match="q_max"):
        VAFA(estimator, q_max=0.5)
    with pytest.raises(ValueError, match="q_min"):
        VAFA(estimator, q_max=4, variant="code", q_min=5)
    x, y = _volumes()
    with pytest.raises(ValueError, match="divisible"):
        VAFA(estimator, block_size=(6, 6, 6), steps=1).generate(x.numpy(), y.numpy())


def test_frequency_consistency_losses() -> None:
    torch.manual_seed(0)
    clean = torch.randn(2, 3, 8, 8, 8)
    assert frequency_consistency(clean, clean, "l1") == 0
    assert frequency_consistency(clean, clean, "normalized-l1") == 0
    noisy = clean + 0.1 * torch.randn_like(clean)
    # orthonormal DCT: the normalised loss is scale-free, the plain one is not
    assert torch.isclose(
        frequency_consistency(clean, noisy, "normalized-l1"),
        frequency_consistency(3 * clean, 3 * noisy, "normalized-l1"),
    )
    assert frequency_consistency(3 * clean, 3 * noisy, "l1") > frequency_consistency(clean, noisy, "l1")
