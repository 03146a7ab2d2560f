"""Gaussian SSIM against scikit-image, and VAFA's block-wise SSIM loss against a loop over blocks.

scikit-image's ``structural_similarity(gaussian_weights=True)`` always filters with
``truncate=3.5`` (an 11-tap window at σ = 1.5) and has no option to change it; its ``win_size``
only sets how much border is cropped. The reference therefore patches the Gaussian filter it
uses to truncate at ``win_size // 2`` taps from the centre, so that, with ``win_size=3``, the
filter is the 3-tap window and the 1-voxel crop is exactly the valid region of our convolution.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import skimage.metrics._structural_similarity as skimage_ssim_module
import torch
from monai.data.utils import dense_patch_slices
from skimage.metrics import structural_similarity

from medbench_vafa.block_ssim import gaussian_ssim, vafa_ssim_loss

WIN_SIZE, SIGMA = 3, 1.5


@pytest.fixture
def skimage_3_tap(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    original = skimage_ssim_module.gaussian

    def truncated(image: np.ndarray, sigma: float, **kwargs: Any) -> np.ndarray:
        kwargs["truncate"] = (WIN_SIZE // 2) / sigma  # scipy's radius = int(truncate·σ + 0.5) = 1
        return original(image, sigma, **kwargs)

    monkeypatch.setattr(skimage_ssim_module, "gaussian", truncated)
    yield


def _skimage_ssim(a: np.ndarray, b: np.ndarray) -> float:
    return float(
        structural_similarity(
            a,
            b,
            win_size=WIN_SIZE,
            gaussian_weights=True,
            sigma=SIGMA,
            use_sample_covariance=False,
            data_range=1.0,
        )
    )


def _pair(shape: tuple[int, ...], seed: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.random(shape)
    # Samples with growing noise, so that some SSIMs are high, some low and some negative.
    scale = noise * np.arange(1, shape[0] * shape[1] + 1).reshape(
        shape[0], shape[1], *([1] * (len(shape) - 2))
    )
    y = np.clip(x + scale * rng.standard_normal(shape), 0, 1)
    y[0, 0] = 1 - x[0, 0]  # anti-correlated: a negative SSIM
    return x, y


@pytest.mark.usefixtures("skimage_3_tap")
@pytest.mark.parametrize(
    ("shape", "noise"), [((2, 3, 6, 7, 5), 0.05), ((3, 2, 9, 8), 0.1), ((1, 1, 3, 4, 3), 0.2)]
)
def test_gaussian_ssim_equals_skimage(shape: tuple[int, ...], noise: float) -> None:
    x, y = _pair(shape, sum(shape), noise)
    ours = gaussian_ssim(torch.from_numpy(x), torch.from_numpy(y), nonnegative=False)
    assert ours.shape == shape[:2]
    expected = np.array([[_skimage_ssim(x[n, c], y[n, c]) for c in range(shape[1])] for n in range(shape[0])])
    assert (expected < 0).any()
    assert expected.size == 1 or (expected > 0.2).any()
    np.testing.assert_allclose(ours.numpy(), expected, rtol=0, atol=1e-12)
    clamped = gaussian_ssim(torch.from_numpy(x), torch.from_numpy(y))
    np.testing.assert_allclose(clamped.numpy(), np.maximum(expected, 0), rtol=0, atol=1e-12)


def test_identical_inputs_give_one() -> None:
    x = torch.rand(2, 3, 5, 6, 7)
    torch.testing.assert_close(gaussian_ssim(x, x), torch.ones(2, 3))
    x2 = torch.rand(4, 1, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(
        gaussian_ssim(x2, x2.clone(), win_size=5), torch.ones(4, 1, dtype=torch.float64)
    )


def test_gaussian_ssim_validates_input() -> None:
    with pytest.raises(ValueError, match="same shape"):
        gaussian_ssim(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))
    with pytest.raises(ValueError, match="4-D"):
        gaussian_ssim(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="odd"):
        gaussian_ssim(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), win_size=4)


@pytest.mark.usefixtures("skimage_3_tap")
def test_vafa_ssim_loss_equals_loop_over_blocks() -> None:
    spatial, block = (6, 8, 10), (3, 4, 5)
    rng = np.random.default_rng(3)
    x = rng.random((2, 1, *spatial))
    x_adv = np.clip(x + 0.15 * rng.standard_normal(x.shape), 0, 1)
    x_adv[1, 0, :3, :4, :5] = 1 - x[1, 0, :3, :4, :5]  # one block with a negative SSIM, clamped to 0
    values = [
        max(_skimage_ssim(x[b, 0][patch], x_adv[b, 0][patch]), 0.0)
        for patch in dense_patch_slices(spatial, block, block)
        for b in range(2)
    ]
    assert min(values) == 0.0
    loss = vafa_ssim_loss(torch.from_numpy(x), torch.from_numpy(x_adv), block)
    assert loss.ndim == 0
    np.testing.assert_allclose(loss.item(), 1 - np.mean(values), rtol=0, atol=1e-12)


def test_vafa_ssim_loss_zero_for_identical_and_positive_otherwise() -> None:
    x = torch.rand(2, 1, 8, 8, 8, requires_grad=True)
    torch.testing.assert_close(vafa_ssim_loss(x.detach(), x.detach().clone(), (4, 4, 4)), torch.tensor(0.0))
    x_adv = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    loss = vafa_ssim_loss(x.detach(), x_adv, (4, 4, 4))
    assert loss.item() > 0
    loss.backward()
    assert x.grad is not None and bool(x.grad.abs().sum() > 0)


def test_vafa_ssim_loss_validates_input() -> None:
    with pytest.raises(ValueError, match=r"\(B, 1, D, H, W\)"):
        vafa_ssim_loss(torch.zeros(1, 2, 4, 4, 4), torch.zeros(1, 2, 4, 4, 4), (2, 2, 2))
    with pytest.raises(ValueError, match="same shape"):
        vafa_ssim_loss(torch.zeros(1, 1, 4, 4, 4), torch.zeros(1, 1, 4, 4, 8), (2, 2, 2))
    with pytest.raises(ValueError, match="not divisible"):
        vafa_ssim_loss(torch.zeros(1, 1, 4, 4, 6), torch.zeros(1, 1, 4, 4, 6), (4, 4, 4))
