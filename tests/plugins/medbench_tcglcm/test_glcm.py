"""The differentiable GLCM against scikit-image's graycomatrix / graycoprops."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from skimage.feature import graycomatrix, graycoprops

from medbench_tcglcm import glcm
from medbench_tcglcm.glcm import (
    FEATURES,
    cooccurrence,
    hard_cooccurrence,
    hard_memberships,
    offset,
    soft_cooccurrence,
    soft_memberships,
    texture_features,
)

ANGLES = [k * math.pi / 4 for k in range(8)]


def test_offsets_follow_scikit_image_rounding() -> None:
    expected = [(0, 3), (2, 2), (3, 0), (2, -2), (0, -3), (-2, -2), (-3, 0), (-2, 2)]
    assert [offset(3, angle) for angle in ANGLES] == expected


def _by_memberships(
    images: torch.Tensor,
    levels: int,
    distances: list[int],
    angles: list[float],
    symmetric: bool,
    normed: bool,
) -> torch.Tensor:
    return cooccurrence(hard_memberships(images, levels), distances, angles, symmetric, normed)


def _direct_sum(memberships: torch.Tensor, distances: list[int], angles: list[float]) -> torch.Tensor:
    """Raw co-occurrences by the definition: one product of two shifted, copied views per offset."""
    batch, levels, height, width = memberships.shape
    result = memberships.new_zeros((batch, levels, levels, len(distances), len(angles)))
    for d_index, distance in enumerate(distances):
        for a_index, angle in enumerate(angles):
            dr, dc = offset(distance, angle)
            if abs(dr) >= height or abs(dc) >= width:
                continue
            source = memberships[:, :, max(0, -dr) : height - max(0, dr), max(0, -dc) : width - max(0, dc)]
            target = memberships[:, :, max(0, dr) : height - max(0, -dr), max(0, dc) : width - max(0, -dc)]
            result[..., d_index, a_index] = torch.einsum("bihw,bjhw->bij", source, target)
    return result


@pytest.mark.parametrize("method", [_by_memberships, hard_cooccurrence])
@pytest.mark.parametrize(("size", "levels"), [((7, 9), 4), ((16, 16), 8), ((23, 12), 16)])
@pytest.mark.parametrize("symmetric", [True, False])
def test_hard_mode_equals_graycomatrix(
    method: Callable[..., torch.Tensor], size: tuple[int, int], levels: int, symmetric: bool
) -> None:
    rng = np.random.default_rng(sum(size) + levels)
    images = rng.integers(0, levels, (3, *size), dtype=np.uint8)
    distances = [1, 2, 3, 8]  # 8 leaves the 7-row image at 90° (an all-zero matrix)
    ours = method(torch.from_numpy(images), levels, distances, ANGLES, symmetric, True)
    for index, image in enumerate(images):
        reference = graycomatrix(image, distances, ANGLES, levels=levels, symmetric=symmetric, normed=True)
        np.testing.assert_allclose(ours[index].numpy(), reference, atol=1e-12)
    counts = method(torch.from_numpy(images), levels, [1], ANGLES, False, False)
    raw = graycomatrix(images[0], [1], ANGLES, levels=levels)
    np.testing.assert_array_equal(counts[0].numpy(), raw)


def test_hard_cooccurrence_counts_pairs_exactly_and_checks_levels() -> None:
    images = torch.randint(0, 32, (5, 40, 37), generator=torch.Generator().manual_seed(1))
    counts = hard_cooccurrence(images, 32, [1, 3, 12], ANGLES, symmetric=False, normed=False)
    assert torch.equal(counts, _direct_sum(hard_memberships(images, 32), [1, 3, 12], ANGLES))
    # θ + 180° gives the transposed matrix
    assert torch.equal(counts[..., 4:], counts[..., :4].transpose(1, 2))
    with pytest.raises(TypeError):
        hard_cooccurrence(images.double(), 32, [1], ANGLES)
    with pytest.raises(ValueError, match="grey levels"):
        hard_cooccurrence(images, 16, [1], ANGLES)


def test_docstring_golden_values() -> None:
    image = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [0, 2, 2, 2], [2, 2, 3, 3]]).unsqueeze(0)
    counts = cooccurrence(
        hard_memberships(image, 4), [1], [0, math.pi / 4, math.pi / 2, 3 * math.pi / 4], False, False
    )
    expected = {
        0: [[2, 2, 1, 0], [0, 2, 0, 0], [0, 0, 3, 1], [0, 0, 0, 1]],
        1: [[1, 1, 3, 0], [0, 1, 1, 0], [0, 0, 0, 2], [0, 0, 0, 0]],
        2: [[3, 0, 2, 0], [0, 2, 2, 0], [0, 0, 1, 2], [0, 0, 0, 0]],
        3: [[2, 0, 0, 0], [1, 1, 2, 0], [0, 0, 2, 1], [0, 0, 0, 0]],
    }
    for angle_index, matrix in expected.items():
        assert counts[0, :, :, 0, angle_index].tolist() == matrix
    normed = cooccurrence(hard_memberships(image, 4), [1, 2], [0, math.pi / 2])
    contrast = texture_features(normed, ["contrast"])[0, 0]
    np.testing.assert_allclose(contrast.numpy(), [[0.58333333, 1.0], [1.25, 2.75]], atol=1e-8)


@pytest.mark.parametrize("feature", FEATURES)
def test_features_equal_graycoprops(feature: str) -> None:
    rng = np.random.default_rng(7)
    images = rng.integers(0, 8, (2, 20, 18), dtype=np.uint8)
    images[1, :, :] = 3  # a flat image: correlation is defined as 1 there
    glcm = cooccurrence(hard_memberships(torch.from_numpy(images), 8), [1, 3], ANGLES)
    ours = texture_features(glcm, [feature])[:, 0]
    for index, image in enumerate(images):
        reference = graycoprops(
            graycomatrix(image, [1, 3], ANGLES, levels=8, symmetric=True, normed=True), feature
        )
        np.testing.assert_allclose(ours[index].numpy(), reference, atol=1e-10)


def test_soft_mode_tends_to_hard_mode_and_has_gradients() -> None:
    levels = 8
    rng = np.random.default_rng(3)
    integer = rng.integers(0, levels, (2, 10, 10))
    image = torch.from_numpy((integer + 0.5) / levels)
    hard = cooccurrence(hard_memberships(torch.from_numpy(integer), levels), [1, 3], ANGLES)
    soft = cooccurrence(soft_memberships(image, levels, sigma=0.05 / levels), [1, 3], ANGLES)
    assert torch.allclose(soft, hard, atol=1e-6)
    memberships = soft_memberships(image, levels)
    assert torch.allclose(memberships.sum(dim=1), torch.ones(2, 10, 10, dtype=torch.float64))

    small = torch.rand(1, 5, 5, dtype=torch.float64, requires_grad=True)

    def features(x: torch.Tensor) -> torch.Tensor:
        return texture_features(
            cooccurrence(soft_memberships(x, 4), [1], ANGLES[:4]), ["contrast", "homogeneity"]
        )

    assert torch.autograd.gradcheck(features, (small,), eps=1e-6, atol=1e-5)


@pytest.fixture
def tiny_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of one or two small images, so that the tests go through several chunks."""
    for budget in ("_CPU_CHUNK_ELEMENTS", "_CPU_THREADED_CHUNK_ELEMENTS"):
        monkeypatch.setattr(glcm, budget, 500)


@pytest.mark.usefixtures("tiny_chunks")
def test_soft_cooccurrence_equals_the_direct_sum() -> None:
    images = torch.rand(5, 13, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    distances = [1, 2, 3, 5, 12]
    memberships = soft_memberships(images, 6, sigma=0.1)
    expected = _direct_sum(memberships, distances, ANGLES)
    raw = soft_cooccurrence(images, 6, distances, ANGLES, sigma=0.1, symmetric=False, normed=False)
    torch.testing.assert_close(raw, expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(
        cooccurrence(memberships, distances, ANGLES, False, False), expected, rtol=1e-12, atol=1e-14
    )
    normed = soft_cooccurrence(images, 6, distances, ANGLES, sigma=0.1)
    symmetric = expected + expected.transpose(1, 2)
    totals = symmetric.sum(dim=(1, 2), keepdim=True)
    torch.testing.assert_close(normed, symmetric / torch.where(totals == 0, 1.0, totals), rtol=1e-12, atol=0)


@pytest.mark.usefixtures("tiny_chunks")
def test_soft_cooccurrence_gradients() -> None:
    images = torch.rand(3, 6, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(4))

    def raw(x: torch.Tensor) -> torch.Tensor:
        return soft_cooccurrence(x, 4, [1, 2], ANGLES, sigma=0.2, symmetric=False, normed=False)

    assert torch.autograd.gradcheck(raw, (images.requires_grad_(True),), eps=1e-6, atol=1e-7)
    memberships = soft_memberships(images.detach(), 4).detach().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda m: cooccurrence(m, [1, 3], ANGLES, False, False), (memberships,), eps=1e-6, atol=1e-7
    )


def test_soft_memberships_have_no_subnormal_weights() -> None:
    image = torch.tensor([[[0.0, 0.5, 1.0]]])
    memberships = soft_memberships(image, 32)
    assert memberships.shape == (1, 32, 1, 3)
    assert memberships[0, -1, 0, 0] == 0 and memberships[0, 0, 0, 2] == 0
    assert not ((memberships > 0) & (memberships < torch.finfo(torch.float32).tiny)).any()
    torch.testing.assert_close(memberships.sum(dim=1), torch.ones(1, 1, 3))
