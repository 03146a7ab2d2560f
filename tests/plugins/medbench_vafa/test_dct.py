"""The matrix DCT against scipy, and block splitting against MONAI's patch order."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import torch
from monai.data.utils import dense_patch_slices

from medbench_vafa.dct import (
    block_merge,
    block_split,
    blockwise_dct,
    blockwise_idct,
    dct,
    dct_2d,
    dct_3d,
    dct_matrix,
    idct,
    idct_2d,
    idct_3d,
)


def _random(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


@pytest.mark.parametrize("shape", [(5, 7, 4), (2, 3, 6, 5, 9), (1, 1, 1)])
def test_dct_3d_equals_scipy(shape: tuple[int, ...]) -> None:
    x = _random(shape, sum(shape))
    ours = dct_3d(torch.from_numpy(x))
    expected = scipy.fft.dctn(x, type=2, norm="ortho", axes=(-3, -2, -1))
    np.testing.assert_allclose(ours.numpy(), expected, rtol=0, atol=1e-12)
    back = idct_3d(torch.from_numpy(expected))
    np.testing.assert_allclose(back.numpy(), x, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(6, 11), (3, 4, 10, 3)])
def test_dct_2d_equals_scipy(shape: tuple[int, ...]) -> None:
    x = _random(shape, sum(shape))
    ours = dct_2d(torch.from_numpy(x))
    np.testing.assert_allclose(
        ours.numpy(), scipy.fft.dctn(x, type=2, norm="ortho", axes=(-2, -1)), atol=1e-12
    )
    inverse = scipy.fft.idctn(x, type=2, norm="ortho", axes=(-2, -1))
    np.testing.assert_allclose(idct_2d(torch.from_numpy(x)).numpy(), inverse, rtol=0, atol=1e-12)


def test_dct_over_arbitrary_dims_equals_scipy() -> None:
    x = _random((4, 5, 6, 3), 0)
    ours = dct(torch.from_numpy(x), (0, 2))
    np.testing.assert_allclose(ours.numpy(), scipy.fft.dctn(x, type=2, norm="ortho", axes=(0, 2)), atol=1e-12)
    np.testing.assert_allclose(idct(ours, (2, -4)).numpy(), x, rtol=0, atol=1e-12)


def test_round_trip_float32() -> None:
    x = torch.rand(2, 1, 8, 12, 16) * 255
    np.testing.assert_allclose(idct_3d(dct_3d(x)).numpy(), x.numpy(), rtol=0, atol=1e-3)


def test_dct_matrix_is_orthonormal_and_cached() -> None:
    m = dct_matrix(9, dtype=torch.float64)
    np.testing.assert_allclose((m @ m.T).numpy(), np.eye(9), atol=1e-13)
    assert dct_matrix(9, dtype=torch.float64) is m
    assert dct_matrix(9, device="cpu", dtype=torch.float32).dtype == torch.float32
    with pytest.raises(ValueError, match=">= 1"):
        dct_matrix(0)


def test_invalid_dims_raise() -> None:
    x = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="out of range"):
        dct(x, (2,))
    with pytest.raises(ValueError, match="distinct"):
        dct(x, (1, -1))


def test_gradient_flows() -> None:
    x = torch.randn(2, 3, 4, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: dct_3d(t), (x,))
    assert torch.autograd.gradcheck(lambda t: idct_2d(t), (x,))
    assert torch.autograd.gradcheck(
        lambda t: blockwise_idct(blockwise_dct(t, (1, 2, 2)) ** 2, (3, 4, 2)), (x,)
    )


def test_matrix_cached_in_inference_mode_still_supports_autograd() -> None:
    with torch.inference_mode():
        dct_3d(torch.zeros(13, 13, 13))
    x = torch.randn(13, 13, 13, requires_grad=True)
    dct_3d(x).sum().backward()
    assert x.grad is not None


@pytest.mark.parametrize(
    ("spatial", "block"), [((8, 6, 4), (4, 3, 2)), ((6, 9), (3, 3)), ((4, 4, 4), (4, 4, 4)), ((10,), (5,))]
)
def test_block_order_matches_monai(spatial: tuple[int, ...], block: tuple[int, ...]) -> None:
    x = torch.arange(2 * 3 * int(np.prod(spatial))).reshape(2, 3, *spatial)
    blocks = block_split(x, block)
    slices = dense_patch_slices(spatial, block, block)
    assert blocks.shape == (2, 3, len(slices), *block)
    for index, patch in enumerate(slices):
        torch.testing.assert_close(blocks[:, :, index], x[(slice(None), slice(None), *patch)], rtol=0, atol=0)
    torch.testing.assert_close(block_merge(blocks, spatial), x, rtol=0, atol=0)


def test_blockwise_dct_equals_scipy_per_block() -> None:
    spatial, block = (6, 8, 4), (3, 4, 2)
    x = _random((2, 1, *spatial), 1)
    coeffs = blockwise_dct(torch.from_numpy(x), block)
    for index, patch in enumerate(dense_patch_slices(spatial, block, block)):
        expected = scipy.fft.dctn(
            x[(slice(None), slice(None), *patch)], type=2, norm="ortho", axes=(-3, -2, -1)
        )
        np.testing.assert_allclose(coeffs[:, :, index].numpy(), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(blockwise_idct(coeffs, spatial).numpy(), x, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("shape", "block"), [((2, 3, 6, 9), (3, 3)), ((1, 2, 16, 8, 24), (8, 8, 8)), ((3, 10), (5,))]
)
def test_blockwise_dct_equals_the_dct_of_the_split_blocks(
    shape: tuple[int, ...], block: tuple[int, ...]
) -> None:
    x = torch.from_numpy(_random(shape, 5))
    dims = range(-len(block), 0)
    coeffs = blockwise_dct(x, block)
    torch.testing.assert_close(coeffs, dct(block_split(x, block), dims), rtol=0, atol=1e-12)
    torch.testing.assert_close(blockwise_idct(coeffs, shape[-len(block) :]), x, rtol=0, atol=1e-12)
    float32 = blockwise_dct(x.float(), block)
    torch.testing.assert_close(float32, coeffs.float(), rtol=0, atol=1e-5)


def test_non_divisible_size_raises() -> None:
    with pytest.raises(ValueError, match=r"spatial size \(6, 7\) is not divisible by block size \(3, 2\)"):
        block_split(torch.zeros(1, 6, 7), (3, 2))
    with pytest.raises(ValueError, match="not divisible"):
        blockwise_dct(torch.zeros(1, 1, 8, 8, 9), (8, 8, 8))
    with pytest.raises(ValueError, match="cannot tile"):
        block_merge(torch.zeros(1, 5, 2, 2), (4, 4))
    with pytest.raises(ValueError, match="cannot split"):
        block_split(torch.zeros(4, 4), (2, 2, 2))
