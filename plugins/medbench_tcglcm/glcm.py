"""A batched, differentiable grey-level co-occurrence matrix (GLCM) and its texture features.

Two modes share one code path:

* **hard**: every pixel belongs to exactly one grey level (one-hot). This reproduces
  scikit-image's ``graycomatrix(..., symmetric=True, normed=True)`` exactly, including its
  offset rounding (``dr = round(sin θ · d)``, ``dc = round(cos θ · d)``, half away from zero,
  so at distance 3 the diagonals move 2 pixels).
* **soft**: every pixel spreads over the levels with Gaussian weights around the level
  centres (normalised to sum 1), so that gradients flow back to the image.

For an offset (dr, dc), the co-occurrence of levels (i, j) is the sum over the valid
positions p of ``m_i(p) · m_j(p + offset)``, one batched matrix product per offset; it is
then symmetrised (``P + Pᵀ``) and normalised to sum 1 (a zero sum stays zero).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

FEATURES = ("contrast", "dissimilarity", "homogeneity", "ASM", "energy", "correlation")


def _round_half_away(value: float) -> int:
    return math.floor(abs(value) + 0.5) * (1 if value >= 0 else -1)


def offset(distance: int, angle: float) -> tuple[int, int]:
    """Row and column offset of scikit-image's GLCM for one distance and angle.

    ``+sin`` moves *down* the rows, as in scikit-image's code.
    """
    return _round_half_away(math.sin(angle) * distance), _round_half_away(math.cos(angle) * distance)


def hard_memberships(levels_image: torch.Tensor, levels: int) -> torch.Tensor:
    """One-hot level memberships ``(B, L, H, W)`` of an integer image ``(B, H, W)`` in [0, levels)."""
    if levels_image.dtype.is_floating_point:
        raise TypeError("hard mode needs an integer image of grey levels")
    if int(levels_image.min()) < 0 or int(levels_image.max()) >= levels:
        raise ValueError(f"grey levels must lie in [0, {levels})")
    return torch.nn.functional.one_hot(levels_image.long(), levels).permute(0, 3, 1, 2).to(torch.float64)


def soft_memberships(image: torch.Tensor, levels: int, sigma: float | None = None) -> torch.Tensor:
    """Gaussian soft memberships ``(B, L, H, W)`` of a float image ``(B, H, W)`` in [0, 1].

    Level ``k`` is centred at ``(k + 0.5) / levels``; ``sigma`` defaults to half a bin width.
    Each pixel's memberships sum to 1.
    """
    sigma = 0.5 / levels if sigma is None else sigma
    centres = (torch.arange(levels, device=image.device, dtype=image.dtype) + 0.5) / levels
    distance = image.unsqueeze(1) - centres.view(1, -1, 1, 1)
    weights = torch.exp(-0.5 * (distance / sigma) ** 2)
    return weights / weights.sum(dim=1, keepdim=True).clamp_min(torch.finfo(image.dtype).tiny)


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
    batch, levels, height, width = memberships.shape
    result = memberships.new_zeros((batch, levels, levels, len(distances), len(angles)))
    for d_index, distance in enumerate(distances):
        for a_index, angle in enumerate(angles):
            dr, dc = offset(distance, angle)
            if abs(dr) >= height or abs(dc) >= width:
                continue
            source = memberships[:, :, max(0, -dr) : height - max(0, dr), max(0, -dc) : width - max(0, dc)]
            target = memberships[:, :, max(0, dr) : height - max(0, -dr), max(0, dc) : width - max(0, -dc)]
            result[..., d_index, a_index] = torch.einsum(
                "bip,bjp->bij", source.reshape(batch, levels, -1), target.reshape(batch, levels, -1)
            )
    if symmetric:
        result = result + result.transpose(1, 2)
    if normed:
        totals = result.sum(dim=(1, 2), keepdim=True)
        result = result / torch.where(totals == 0, torch.ones_like(totals), totals)
    return result


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
