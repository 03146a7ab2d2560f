"""Gaussian SSIM as ``pytorch_msssim`` 0.2.1 computes it, and VAFA's block-wise SSIM loss.

VAFA (paper 003, §1.4 of the reference notes) adds ``1 - SSIM`` between the clean and the
adversarial volume, computed per block, to keep the perturbation imperceptible. The reference
calls ``pytorch_msssim.ssim(..., data_range=1, win_size=3, nonnegative_ssim=True)``; this module
reimplements that with plain tensor ops (no ``pytorch_msssim`` at runtime).
"""

from __future__ import annotations

import torch
from torch import Tensor

from medbench_vafa.dct import block_split

__all__ = ["gaussian_ssim", "vafa_ssim_loss"]


def _gaussian_window(win_size: int, sigma: float, *, device: torch.device, dtype: torch.dtype) -> Tensor:
    """The normalised 1-D Gaussian window of ``pytorch_msssim`` (centred taps, sum 1).

    Args:
        win_size: Number of taps (odd).
        sigma: Standard deviation in taps.
        device: Device of the result.
        dtype: Dtype of the result. The taps are computed in float64 first (pytorch_msssim uses
            float32), which only matters at float32 rounding level.

    Returns:
        Tensor of shape ``(win_size,)``.
    """
    coords = torch.arange(win_size, dtype=torch.float64) - win_size // 2
    taps = torch.exp(-(coords**2) / (2 * sigma**2))
    return (taps / taps.sum()).to(device=device, dtype=dtype)


def _valid_separable_filter(x: Tensor, window: Tensor, n_spatial: int) -> Tensor:
    # Valid (unpadded) correlation along each spatial dim as a weighted sum of shifted views;
    # the window is symmetric, so correlation and convolution agree. Like pytorch_msssim 0.2.1,
    # a dim shorter than the window is left unfiltered (it would otherwise become empty).
    size = window.shape[0]
    for dim in range(x.ndim - n_spatial, x.ndim):
        length = x.shape[dim] - size + 1
        if length < 1:
            continue
        filtered = window[0] * x.narrow(dim, 0, length)
        for tap in range(1, size):
            filtered = filtered + window[tap] * x.narrow(dim, tap, length)
        x = filtered
    return x


def gaussian_ssim(
    x: Tensor,
    y: Tensor,
    *,
    data_range: float = 1.0,
    win_size: int = 3,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    nonnegative: bool = True,
) -> Tensor:
    """SSIM per sample and channel, as ``pytorch_msssim`` 0.2.1's ``ssim`` computes it.

    A normalised Gaussian window is applied separably along every spatial dim as a valid
    convolution (no padding), per channel; variances and covariance are population ones;
    the SSIM map is averaged over the spatial dims. ``pytorch_msssim.ssim(size_average=False)``
    further averages the result over channels, and ``size_average=True`` over everything.

    Args:
        x: ``(N, C, H, W)`` or ``(N, C, D, H, W)`` tensor.
        y: Tensor of the same shape and dtype.
        data_range: Value range of the inputs (``C1 = (k1·R)²``, ``C2 = (k2·R)²``).
        win_size: Window size, odd.
        sigma: Standard deviation of the window.
        k1: SSIM constant K1.
        k2: SSIM constant K2.
        nonnegative: Apply ``relu`` to the per-channel SSIM (``nonnegative_ssim``).

    Returns:
        Tensor of shape ``(N, C)``.

    Raises:
        ValueError: If the shapes differ or are not 4-D/5-D, or ``win_size`` is even.
    """
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.ndim not in (4, 5):
        raise ValueError(f"expected a 4-D (N,C,H,W) or 5-D (N,C,D,H,W) tensor, got shape {tuple(x.shape)}")
    if win_size < 1 or win_size % 2 == 0:
        raise ValueError(f"win_size must be a positive odd number, got {win_size}")
    window = _gaussian_window(win_size, sigma, device=x.device, dtype=x.dtype)
    n_spatial = x.ndim - 2
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2

    def blur(t: Tensor) -> Tensor:
        return _valid_separable_filter(t, window, n_spatial)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    cs_map = (2 * cov + c2) / (var_x + var_y + c2)
    ssim_map = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1) * cs_map
    ssim = ssim_map.flatten(2).mean(-1)
    return torch.relu(ssim) if nonnegative else ssim


def vafa_ssim_loss(x: Tensor, x_adv: Tensor, block: tuple[int, int, int]) -> Tensor:
    """VAFA's block-wise SSIM loss, ``1 - mean SSIM`` over all blocks and samples.

    Both volumes are cut into blocks and arranged as ``(n_blocks, B, bd, bh, bw)``: blocks are
    the SSIM batch and the ``B`` samples its channels, as in the reference. The reference's
    volumes are ``(B, 1, H, W, D)`` and it permutes every block to depth first; medbench's are
    ``(B, 1, D, H, W)``, so :func:`~medbench_vafa.dct.block_split` already yields depth-first
    ``(bd, bh, bw)`` blocks and no spatial permutation is needed. (The blocks are enumerated
    over ``(D, H, W)`` rather than the reference's ``(H, W, D)``; the loss is a mean over blocks,
    so that does not change it.) SSIM uses ``data_range=1``,
    a 3-tap Gaussian window (σ = 1.5) and is clamped at 0 per (block, sample).

    Args:
        x: Clean volumes ``(B, 1, D, H, W)`` in [0, 1].
        x_adv: Adversarial volumes, same shape.
        block: Block size ``(bd, bh, bw)``, dividing ``(D, H, W)``.

    Returns:
        Scalar loss tensor (0 for identical volumes).

    Raises:
        ValueError: If the volumes are not ``(B, 1, D, H, W)`` or their shapes differ.
    """
    if x.shape != x_adv.shape:
        raise ValueError(
            f"x and x_adv must have the same shape, got {tuple(x.shape)} and {tuple(x_adv.shape)}"
        )
    if x.ndim != 5 or x.shape[1] != 1:
        raise ValueError(f"expected volumes of shape (B, 1, D, H, W), got {tuple(x.shape)}")
    if len(block) != 3:
        raise ValueError(f"block must have 3 entries (bd, bh, bw), got {tuple(block)}")

    def arrange(volume: Tensor) -> Tensor:
        # (B, 1, D, H, W) -> (B, n_blocks, bd, bh, bw) -> (n_blocks, B, bd, bh, bw)
        return block_split(volume[:, 0], block).transpose(0, 1)

    ssim = gaussian_ssim(arrange(x), arrange(x_adv), data_range=1.0, win_size=3, sigma=1.5)
    return 1 - ssim.mean()
