"""A batched, differentiable grey-level co-occurrence matrix (GLCM) and its texture features.

Three entry points compute the same GLCM ``(B, L, L, n_distances, n_angles)``:

* :func:`hard_cooccurrence`: every pixel belongs to exactly one grey level. This reproduces
  scikit-image's ``graycomatrix`` exactly, including its offset rounding (``dr = round(sin θ · d)``,
  ``dc = round(cos θ · d)``, half away from zero, so at distance 3 the diagonals move 2 pixels).
  It counts level pairs with one ``torch.bincount`` per offset (not differentiable).
* :func:`soft_cooccurrence`: every pixel spreads over the levels with Gaussian weights around the
  level centres (normalised to sum 1, :func:`soft_memberships`), so that gradients flow back to the
  image.
* :func:`cooccurrence`: the same from any level memberships ``(B, L, H, W)``, e.g.
  :func:`hard_memberships` (one-hot) or :func:`soft_memberships`.

For an offset (dr, dc), the co-occurrence of levels (i, j) is the sum over the valid positions p
of ``m_i(p) · m_j(p + offset)``, i.e. ``Wₐᵀ W_b`` where ``Wₐ`` and ``W_b`` are the ``(pixels × L)``
memberships of two shifted views: one batched matrix product per offset. The memberships are laid
out levels-last with ``max |dc|`` zero columns appended to every row, so that both views are
contiguous slices of the flattened image (a shift by ``dr · row + dc``; a pair that wraps across a
row end meets a zero column) and nothing is copied per offset. The batch is processed in chunks
that stay in the CPU cache. Offsets ``o`` and ``−o`` (θ and θ + 180°) give transposed matrices, so
only one of them is computed. The result is then symmetrised (``P + Pᵀ``) and normalised to sum 1
(a zero sum stays zero).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.autograd.function import once_differentiable

FEATURES = ("contrast", "dissimilarity", "homogeneity", "ASM", "energy", "correlation")

_CPU_CHUNK_ELEMENTS = 1 << 21
"""Membership elements per chunk on a single CPU thread (8 MiB in float32): a chunk stays in the
cache, and its temporaries are small enough to be reused by the allocator instead of being mapped
afresh."""
_CPU_THREADED_CHUNK_ELEMENTS = 1 << 24
"""The same with several intra-op threads, where every operation ends on a barrier: larger chunks
make fewer, longer parallel regions and let the batched products split over images (on a shared
2-core VM with two threads, 1-image chunks made the forward pass about 7× slower than these)."""
_DEVICE_CHUNK_ELEMENTS = 1 << 28
"""Membership elements per chunk on accelerators, where larger products are faster."""


def _round_half_away(value: float) -> int:
    return math.floor(abs(value) + 0.5) * (1 if value >= 0 else -1)


def offset(distance: int, angle: float) -> tuple[int, int]:
    """Row and column offset of scikit-image's GLCM for one distance and angle.

    ``+sin`` moves *down* the rows, as in scikit-image's code.
    """
    return _round_half_away(math.sin(angle) * distance), _round_half_away(math.cos(angle) * distance)


@dataclass(frozen=True)
class _Plan:
    """Which distinct offsets to compute for a grid of distances × angles, and where each goes."""

    offsets: tuple[tuple[int, int], ...]
    """Distinct offsets inside the image, each with ``dr > 0`` or ``dr == 0 <= dc``."""
    slots: tuple[tuple[int, bool] | None, ...]
    """Per (distance, angle), row-major: index into ``offsets`` and whether the matrix is
    transposed (the offset was ``−offsets[index]``); ``None`` when the offset leaves the image."""
    grid: tuple[int, int]
    pad: int
    """Zero columns appended to each row: the largest ``|dc|``."""


def _plan(height: int, width: int, distances: Sequence[int], angles: Sequence[float]) -> _Plan:
    offsets: list[tuple[int, int]] = []
    slots: list[tuple[int, bool] | None] = []
    for distance in distances:
        for angle in angles:
            dr, dc = offset(distance, angle)
            if abs(dr) >= height or abs(dc) >= width:
                slots.append(None)
                continue
            transposed = dr < 0 or (dr == 0 and dc < 0)
            key = (-dr, -dc) if transposed else (dr, dc)
            if key not in offsets:
                offsets.append(key)
            slots.append((offsets.index(key), transposed))
    pad = max((abs(dc) for _, dc in offsets), default=0)
    return _Plan(tuple(offsets), tuple(slots), (len(distances), len(angles)), pad)


def _check_levels(levels_image: torch.Tensor, levels: int) -> None:
    if levels_image.dtype.is_floating_point:
        raise TypeError("hard mode needs an integer image of grey levels")
    if levels_image.numel() and (int(levels_image.min()) < 0 or int(levels_image.max()) >= levels):
        raise ValueError(f"grey levels must lie in [0, {levels})")


def hard_memberships(levels_image: torch.Tensor, levels: int) -> torch.Tensor:
    """One-hot level memberships ``(B, L, H, W)`` of an integer image ``(B, H, W)`` in [0, levels)."""
    _check_levels(levels_image, levels)
    return torch.nn.functional.one_hot(levels_image.long(), levels).permute(0, 3, 1, 2).to(torch.float64)


def _centres(levels: int, like: torch.Tensor) -> torch.Tensor:
    return (torch.arange(levels, device=like.device, dtype=like.dtype) + 0.5) / levels


class _SoftMemberships(torch.autograd.Function):
    """Levels-last soft memberships ``(B, H, W, L)`` of images ``(B, H, W)``; see :func:`soft_memberships`.

    With ``d_k = c_k − x``, ``m_k ∝ exp(−d_k² / 2σ²)`` and ``∂m_k/∂x = m_k (d_k − Σ_j m_j d_j) / σ²``,
    so the backward takes a few passes over the memberships instead of autograd's saved chain of
    ``(B, H, W, L)`` intermediates.
    """

    @staticmethod
    def forward(ctx: Any, image: torch.Tensor, levels: int, sigma: float) -> torch.Tensor:
        # In place (the forward is not recorded): one (B, H, W, L) buffer, same values as the
        # out-of-place −0.5 · ((x − c) / σ)² → exp → normalise.
        memberships = (image.unsqueeze(-1) - _centres(levels, image)).div_(sigma).square_().mul_(-0.5)
        # exp() is tens of times slower on CPUs where its result would be subnormal; such weights
        # (below the smallest normal number, so negligible next to the nearest level's) are set to 0.
        floor = math.ceil(math.log(torch.finfo(image.dtype).tiny))
        underflow = memberships < floor
        memberships.clamp_min_(floor).exp_().masked_fill_(underflow, 0.0)
        memberships /= memberships.sum(dim=-1, keepdim=True).clamp_min_(torch.finfo(image.dtype).tiny)
        ctx.sigma = sigma
        ctx.save_for_backward(image, memberships)
        return memberships

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        image, memberships = ctx.saved_tensors
        offsets = _centres(memberships.shape[-1], image) - image.unsqueeze(-1)
        weighted = grad * memberships
        grad_image = torch.linalg.vecdot(weighted, offsets) - weighted.sum(dim=-1) * torch.linalg.vecdot(
            memberships, offsets
        )
        return grad_image / ctx.sigma**2, None, None


def _soft_memberships_last(image: torch.Tensor, levels: int, sigma: float | None) -> torch.Tensor:
    """Levels-last soft memberships ``(B, H, W, L)``; see :func:`soft_memberships`."""
    return _SoftMemberships.apply(image, levels, 0.5 / levels if sigma is None else sigma)


def soft_memberships(image: torch.Tensor, levels: int, sigma: float | None = None) -> torch.Tensor:
    """Gaussian soft memberships ``(B, L, H, W)`` of a float image ``(B, H, W)`` in [0, 1].

    Level ``k`` is centred at ``(k + 0.5) / levels``; ``sigma`` defaults to half a bin width.
    Each pixel's memberships sum to 1; a weight that would be below the smallest normal float
    (more than about 13 ``sigma`` from the centre in float32) is 0.

    Returns:
        A view of a levels-last tensor (``.permute(0, 2, 3, 1)`` of it is contiguous).
    """
    return _soft_memberships_last(image, levels, sigma).permute(0, 3, 1, 2)


def _chunk_size(batch: int, elements_per_image: int, device: torch.device) -> int:
    """Images per chunk, so that a chunk's memberships hold about the device's budget of elements."""
    if device.type != "cpu":
        budget = _DEVICE_CHUNK_ELEMENTS
    elif torch.get_num_threads() > 1:
        budget = _CPU_THREADED_CHUNK_ELEMENTS
    else:
        budget = _CPU_CHUNK_ELEMENTS
    return max(1, min(batch, budget // max(1, elements_per_image)))


class _PairProducts(torch.autograd.Function):
    """``flat[:, :n − s]ᵀ @ flat[:, s:]`` for each shift ``s``, stacked: ``(b, n, L)`` → ``(b, L, L, K)``.

    The backward adds each product's two gradients in place into one buffer, where autograd would
    materialise a zero-filled full-size gradient for every slice.
    """

    @staticmethod
    def forward(ctx: Any, flat: torch.Tensor, shifts: tuple[int, ...]) -> torch.Tensor:
        ctx.shifts = shifts
        ctx.save_for_backward(flat)
        pixels = flat.shape[1]
        return torch.stack([torch.bmm(flat[:, : pixels - s].mT, flat[:, s:]) for s in shifts], dim=-1)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (flat,) = ctx.saved_tensors
        pixels = flat.shape[1]
        grad_flat = torch.zeros_like(flat)
        for index, s in enumerate(ctx.shifts):
            grad_flat[:, : pixels - s].baddbmm_(flat[:, s:], grad[..., index].mT)
            grad_flat[:, s:].baddbmm_(flat[:, : pixels - s], grad[..., index])
        return grad_flat, None


def _pair_products(levels_last: torch.Tensor, plan: _Plan) -> torch.Tensor:
    """Raw co-occurrences ``(b, L, L, n_offsets)`` of memberships ``(b, H, W, L)`` for ``plan.offsets``."""
    batch, height, width, levels = levels_last.shape
    if not plan.offsets:
        return levels_last.new_zeros((batch, levels, levels, 0))
    if plan.pad:
        levels_last = torch.nn.functional.pad(levels_last, (0, 0, 0, plan.pad))
    row = width + plan.pad
    flat = levels_last.reshape(batch, height * row, levels)
    return _PairProducts.apply(flat, tuple(dr * row + dc for dr, dc in plan.offsets))


def _chunked_products(
    images: torch.Tensor, levels: int, plan: _Plan, to_levels_last: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """:func:`_pair_products` of ``to_levels_last(chunk)`` for chunks of ``images`` along dim 0."""
    batch, height, width = images.shape[0], images.shape[-2], images.shape[-1]
    size = _chunk_size(batch, levels * height * (width + plan.pad), images.device)
    return torch.cat([_pair_products(to_levels_last(chunk), plan) for chunk in images.split(size)])


def _assemble(counts: torch.Tensor, plan: _Plan, symmetric: bool, normed: bool) -> torch.Tensor:
    """``(B, L, L, n_distances, n_angles)`` from the distinct offsets' raw co-occurrences."""
    slices = []
    for slot in plan.slots:
        if slot is None:
            slices.append(counts.new_zeros(counts.shape[:3]))
        else:
            index, transposed = slot
            matrix = counts[..., index]
            slices.append(matrix.mT if transposed else matrix)
    result = torch.stack(slices, dim=-1).unflatten(-1, plan.grid)
    if symmetric:
        result = result + result.transpose(1, 2)
    if normed:
        totals = result.sum(dim=(1, 2), keepdim=True)
        result = result / torch.where(totals == 0, torch.ones_like(totals), totals)
    return result


def cooccurrence(
    memberships: torch.Tensor,
    distances: Sequence[int],
    angles: Sequence[float],
    symmetric: bool = True,
    normed: bool = True,
) -> torch.Tensor:
    """GLCM ``(B, L, L, n_distances, n_angles)`` from level memberships ``(B, L, H, W)``.

    With one-hot memberships and ``symmetric=normed=False`` the result is scikit-image's
    integer counts.
    """
    _, levels, height, width = memberships.shape
    plan = _plan(height, width, distances, angles)
    counts = _chunked_products(memberships, levels, plan, lambda chunk: chunk.permute(0, 2, 3, 1))
    return _assemble(counts, plan, symmetric, normed)


def soft_cooccurrence(
    image: torch.Tensor,
    levels: int,
    distances: Sequence[int],
    angles: Sequence[float],
    *,
    sigma: float | None = None,
    symmetric: bool = True,
    normed: bool = True,
) -> torch.Tensor:
    """``cooccurrence(soft_memberships(image, levels, sigma), ...)``, differentiable, chunk by chunk.

    Computing the memberships per chunk keeps them in the cache between their construction and
    the products.

    Args:
        image: Float images ``(B, H, W)`` in [0, 1].
        levels: Number of grey levels ``L``.
        distances: Pixel distances.
        angles: Angles in radians.
        sigma: Width of the Gaussian memberships (default half a bin width).
        symmetric: Add the transpose (scikit-image's ``symmetric``).
        normed: Normalise each matrix to sum 1.

    Returns:
        The GLCM ``(B, L, L, n_distances, n_angles)``, in the image's dtype.
    """
    plan = _plan(image.shape[-2], image.shape[-1], distances, angles)
    counts = _chunked_products(
        image, levels, plan, lambda chunk: _soft_memberships_last(chunk, levels, sigma)
    )
    return _assemble(counts, plan, symmetric, normed)


def hard_cooccurrence(
    levels_image: torch.Tensor,
    levels: int,
    distances: Sequence[int],
    angles: Sequence[float],
    symmetric: bool = True,
    normed: bool = True,
) -> torch.Tensor:
    """scikit-image's ``graycomatrix`` for a batch of integer images, by counting level pairs.

    Equal to ``cooccurrence(hard_memberships(levels_image, levels), ...)``, without the one-hot
    memberships: for each offset, one ``torch.bincount`` of ``(image · L + level_a) · L + level_b``.

    Args:
        levels_image: Integer grey levels ``(B, H, W)`` in [0, levels).
        levels: Number of grey levels ``L``.
        distances: Pixel distances.
        angles: Angles in radians.
        symmetric: Add the transpose (scikit-image's ``symmetric``).
        normed: Normalise each matrix to sum 1.

    Returns:
        The GLCM ``(B, L, L, n_distances, n_angles)`` in float64 (integer counts when
        ``normed=False``).

    Raises:
        TypeError: If the image is not of an integer dtype.
        ValueError: If a level lies outside [0, levels).
    """
    _check_levels(levels_image, levels)
    batch, height, width = levels_image.shape
    plan = _plan(height, width, distances, angles)
    bins = batch * levels * levels
    index_dtype = torch.int32 if bins < 2**31 else torch.int64
    target = levels_image.to(index_dtype)
    image_index = torch.arange(batch, device=levels_image.device, dtype=index_dtype).view(-1, 1, 1)
    source = (target + image_index * levels) * levels
    counts = [
        torch.bincount(
            (
                source[:, : height - dr, max(0, -dc) : width - max(0, dc)]
                + target[:, dr:, max(0, dc) : width - max(0, -dc)]
            ).flatten(),
            minlength=bins,
        ).view(batch, levels, levels)
        for dr, dc in plan.offsets
    ]
    stacked = torch.stack(counts, dim=-1) if counts else target.new_zeros((batch, levels, levels, 0))
    return _assemble(stacked.to(torch.float64), plan, symmetric, normed)


def texture_features(glcm: torch.Tensor, names: Sequence[str] = FEATURES) -> torch.Tensor:
    """scikit-image's ``graycoprops`` for a batch: ``(B, n_features, n_distances, n_angles)``.

    Each (distance, angle) slice is re-normalised to sum 1 first, as ``graycoprops`` does;
    ``correlation`` is 1 where either marginal standard deviation is below 1e-15.
    """
    totals = glcm.sum(dim=(1, 2), keepdim=True)
    p = glcm / torch.where(totals == 0, torch.ones_like(totals), totals)
    levels = p.shape[1]
    index = torch.arange(levels, device=p.device, dtype=p.dtype)
    i = index.view(1, -1, 1, 1, 1)
    j = index.view(1, 1, -1, 1, 1)
    features = []
    for name in names:
        if name == "contrast":
            value = (p * (i - j) ** 2).sum(dim=(1, 2))
        elif name == "dissimilarity":
            value = (p * (i - j).abs()).sum(dim=(1, 2))
        elif name == "homogeneity":
            value = (p / (1 + (i - j) ** 2)).sum(dim=(1, 2))
        elif name in ("ASM", "energy"):
            value = (p**2).sum(dim=(1, 2))
            value = value.sqrt() if name == "energy" else value
        elif name == "correlation":
            mean_i = (p * i).sum(dim=(1, 2), keepdim=True)
            mean_j = (p * j).sum(dim=(1, 2), keepdim=True)
            std_i = ((p * (i - mean_i) ** 2).sum(dim=(1, 2), keepdim=True)).sqrt()
            std_j = ((p * (j - mean_j) ** 2).sum(dim=(1, 2), keepdim=True)).sqrt()
            covariance = (p * (i - mean_i) * (j - mean_j)).sum(dim=(1, 2), keepdim=True)
            flat = (std_i < 1e-15) | (std_j < 1e-15)
            value = torch.where(
                flat, torch.ones_like(covariance), covariance / (std_i * std_j).clamp_min(1e-30)
            )
            value = value.squeeze(2).squeeze(1)
        else:
            raise ValueError(f"unknown GLCM feature {name!r}; known: {', '.join(FEATURES)}")
        features.append(value)
    return torch.stack(features, dim=1)
