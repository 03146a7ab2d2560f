"""The differentiable GLCM against scikit-image's graycomatrix / graycoprops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.feature import graycomatrix, graycoprops

from medbench_tcglcm.glcm import (
    FEATURES,
    cooccurrence,
    hard_memberships,
    offset,
    soft_memberships,
    texture_features,
)

ANGLES = [k * math.pi / 4 for k in range(8)]


def test_offsets_follow_scikit_image_rounding() -> None:
    expected = [(0, 3), (2, 2), (3, 0), (2, -2), (0, -3), (-2, -2), (-3, 0), (-2, 2)]
    assert [offset(3, angle) for angle in ANGLES] == expected


@pytest.mark.parametrize(("size", "levels"), [((7, 9), 4), ((16, 16), 8), ((23, 12), 16)])
@pytest.mark.parametrize("symmetric", [True, False])
def test_hard_mode_equals_graycomatrix(size: tuple[int, int], levels: int, symmetric: bool) -> None:
    rng = np.random.default_rng(sum(size) + levels)
    images = rng.integers(0, levels, (3, *size), dtype=np.uint8)
    distances = [1, 2, 3]
    ours = cooccurrence(
        hard_memberships(torch.from_numpy(images), levels),
        distances,
        ANGLES,
        symmetric=symmetric,
        normed=True,
    )
    for index, image in enumerate(images):
        reference = graycomatrix(image, distances, ANGLES, levels=levels, symmetric=symmetric, normed=True)
        np.testing.assert_allclose(ours[index].numpy(), reference, atol=1e-12)
    counts = cooccurrence(hard_memberships(torch.from_numpy(images), levels), [1], ANGLES, False, False)
    raw = graycomatrix(images[0], [1], ANGLES, levels=levels)
    np.testing.assert_array_equal(counts[0].numpy(), raw)


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
