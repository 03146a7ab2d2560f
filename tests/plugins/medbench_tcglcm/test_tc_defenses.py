"""The GLCM loss (paper 000, eq. 19), the texture/color modules and the defenses tc and tc-glcm."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.feature import graycomatrix, graycoprops

from medbench.testing import check_defense
from medbench_tcglcm.defense import TextureColor, TextureColorGLCM
from medbench_tcglcm.loss import (
    PAPER_ANGLES,
    PAPER_FEATURES,
    glcm_loss,
    grayscale,
    normalise_features,
    second_order_texture,
)
from medbench_tcglcm.modules import ColorModule, TextureColorNetwork, TextureModule

LEVELS = 8


def _centred_image(rng: np.random.Generator, size: int = 20) -> tuple[np.ndarray, torch.Tensor]:
    """Integer levels and the float image at the centres of those levels' bins."""
    levels = rng.integers(0, LEVELS, (size, size), dtype=np.uint8)
    return levels, torch.from_numpy((levels.astype(np.float64) + 0.5) / LEVELS)


def _skimage_sot(levels: np.ndarray) -> np.ndarray:
    """The 40 features of the loss from scikit-image, normalised by hand."""
    glcm = graycomatrix(levels, [3], list(PAPER_ANGLES), levels=LEVELS, symmetric=True, normed=True)
    scale = {"contrast": (LEVELS - 1) ** 2, "dissimilarity": LEVELS - 1}
    rows = []
    for name in PAPER_FEATURES:
        value = graycoprops(glcm, name)[0]
        value = (value + 1) / 2 if name == "correlation" else value / scale.get(name, 1)
        rows.append(value)
    return np.concatenate(rows)


def test_sot_features_with_narrow_soft_bins_equal_scikit_image() -> None:
    rng = np.random.default_rng(0)
    levels, image = _centred_image(rng)
    ours = second_order_texture(image[None], levels=LEVELS, sigma=0.02 / LEVELS)[0]
    np.testing.assert_allclose(ours.numpy(), _skimage_sot(levels), atol=1e-6)


def test_the_loss_is_the_batch_maximum_of_the_l1_distance_over_all_40_features() -> None:
    rng = np.random.default_rng(1)
    gray = torch.stack([_centred_image(rng)[1] for _ in range(3)]).unsqueeze(1)
    colorized = torch.rand(3, 3, 20, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    loss = glcm_loss(colorized, gray, levels=LEVELS)
    ours = second_order_texture(grayscale(colorized), levels=LEVELS)
    reference = second_order_texture(gray[:, 0], levels=LEVELS)
    assert ours.shape == (3, 40)  # all 8 orientations, computed directly
    expected = (ours - reference).abs().sum(dim=1).max()
    assert float(loss) == pytest.approx(float(expected), rel=1e-9)


def test_an_unchanged_gray_image_costs_nothing_and_gradients_flow() -> None:
    gray = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    same = gray.expand(-1, 3, -1, -1).clone().requires_grad_(True)
    assert float(glcm_loss(same, gray).detach()) == pytest.approx(0.0, abs=1e-12)
    other = torch.rand(2, 3, 16, 16, dtype=torch.float64, requires_grad=True)
    glcm_loss(other, gray).backward()
    assert other.grad is not None and torch.isfinite(other.grad).all() and other.grad.abs().sum() > 0


def test_normalised_features_lie_in_the_unit_interval() -> None:
    images = torch.rand(4, 24, 24)
    images[0] = 0.5  # a flat image: correlation 1 by scikit-image's convention
    features = second_order_texture(images, levels=16)
    assert float(features.min()) >= 0 and float(features.max()) <= 1
    with pytest.raises(ValueError, match="entropy"):
        normalise_features(torch.zeros(1, 1), ("entropy",), 8)


def test_grayscale_uses_bt601_luma() -> None:
    rgb = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    assert float(grayscale(rgb)) == pytest.approx(0.299)


@pytest.mark.parametrize("size", [(32, 32), (30, 22)])
def test_modules_keep_the_size_and_output_images_in_the_unit_range(size: tuple[int, int]) -> None:
    x = torch.randn(2, 1, *size)
    textured = TextureModule(1, 8)(x)
    colorized = ColorModule(1, 8)(textured)
    assert textured.shape == (2, 1, *size) and colorized.shape == (2, 3, *size)
    for image in (textured, colorized):
        assert float(image.min()) >= 0 and float(image.max()) <= 1


def test_the_texture_encoder_ends_in_one_channel_at_a_quarter_resolution() -> None:
    encoded = TextureModule(1, 8).encoder(torch.zeros(1, 1, 32, 32))
    assert encoded.shape == (1, 1, 8, 8)


@pytest.mark.parametrize("defense", [TextureColor(), TextureColorGLCM()], ids=lambda d: d.name)
def test_tc_defenses_train_and_show_their_colorized_images(defense) -> None:  # type: ignore[no-untyped-def]
    defended = check_defense(defense.configured({"texture_width": 4, "color_width": 4}))
    network = defended.model
    assert isinstance(network, TextureColorNetwork)
    x = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        rows = defense.visualize(defended, x)["texture-color"]
    assert [tuple(row.shape) for row in rows] == [(3, 1, 16, 16), (3, 1, 16, 16), (3, 3, 16, 16)]
    assert all(float(row.min()) >= 0 and float(row.max()) <= 1 for row in rows)


def test_alpha_one_trains_exactly_like_tc() -> None:
    widths = {"texture_width": 4, "color_width": 4}
    plain = check_defense(TextureColor().configured(widths))
    glcm = check_defense(TextureColorGLCM().configured({**widths, "alpha": 1.0}))
    for (name, a), b in zip(plain.model.state_dict().items(), glcm.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_bad_tc_glcm_settings_are_rejected() -> None:
    from medbench.errors import UsageError

    for bad in ({"alpha": 1.5}, {"levels": 1}, {"distance": 0}, {"sigma": -0.1}):
        with pytest.raises(UsageError):
            TextureColorGLCM().configured(bad)
    assert math.isclose(TextureColorGLCM().settings.alpha, 0.98)


@pytest.mark.gpu
def test_glcm_and_its_loss_run_on_the_gpu_and_agree_with_the_cpu() -> None:
    from medbench_tcglcm.glcm import cooccurrence, hard_memberships

    levels = torch.randint(0, 16, (8, 64, 64), generator=torch.Generator().manual_seed(3))
    cpu = cooccurrence(hard_memberships(levels, 16), [1, 3], list(PAPER_ANGLES))
    gpu = cooccurrence(hard_memberships(levels.cuda(), 16), [1, 3], list(PAPER_ANGLES))
    assert torch.allclose(cpu, gpu.cpu(), atol=1e-12)
    colorized = torch.rand(8, 3, 64, 64, device="cuda", requires_grad=True)
    gray = torch.rand(8, 1, 64, 64, device="cuda")
    loss = glcm_loss(colorized, gray)
    loss.backward()
    assert loss.device.type == "cuda" and colorized.grad is not None
    on_cpu = glcm_loss(colorized.detach().cpu(), gray.cpu())
    assert float(loss.detach().cpu()) == pytest.approx(float(on_cpu), rel=1e-4)
