"""The GLCM loss of Chen & Luo 2024 (paper 000, eq. 19).

``GLCMLoss = max_i Σ_j |SOT(grayscale(C(X)))_ij − SOT(X)_ij|``: for every image ``i`` of
the batch, the L1 distance between the second-order texture (SOT) features of the
colorized image, converted back to gray, and those of the input; then the largest of
these distances over the batch (an L∞ norm over the batch).

SOT features: the five of the paper (ASM, contrast, homogeneity, correlation,
dissimilarity) at distance 3 for the 8 orientations k·45°, so n = 40 per image, computed
on a **soft** GLCM (:func:`medbench_tcglcm.glcm.soft_cooccurrence`) so that gradients flow to
the colorized image.

Normalisation ("all the 40 features are normalized in the same range"): each feature is
mapped to [0, 1] with its theoretical range for ``L`` grey levels, which does not depend on
the batch and is the same for both images:

================  ==================  ===================
feature           range               mapped with
================  ==================  ===================
ASM               [0, 1]              as is
contrast          [0, (L − 1)²]       ``/ (L − 1)²``
dissimilarity     [0, L − 1]          ``/ (L − 1)``
homogeneity       [0, 1]              as is
correlation       [−1, 1]             ``(c + 1) / 2``
================  ==================  ===================

Orientations θ and θ + 180° give transposed co-occurrence matrices, and all five features
are invariant to transposition, so the 8 orientations hold 4 distinct values, each
twice. The loss computes the 4 distinct GLCMs and counts each twice, which is exactly the
40-term sum of the paper at half the cost (a test checks it against all 8).
"""

from __future__ import annotations

import math

import torch

from medbench_tcglcm.glcm import soft_cooccurrence, texture_features

PAPER_FEATURES = ("ASM", "contrast", "homogeneity", "correlation", "dissimilarity")
PAPER_ANGLES = tuple(k * math.pi / 4 for k in range(8))
"""The paper's 8 orientations, 0° to 315°."""
DISTINCT_ANGLES = PAPER_ANGLES[:4]

LUMA_WEIGHTS = (0.299, 0.587, 0.114)
"""ITU-R BT.601 luma, as ``torchvision.transforms.functional.rgb_to_grayscale``."""


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` in [0, 1] → ``(B, H, W)``: luma for RGB, the channel mean otherwise."""
    if images.shape[1] == 3:
        weights = images.new_tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)
        return (images * weights).sum(dim=1)
    return images.mean(dim=1)


def normalise_features(features: torch.Tensor, names: tuple[str, ...], levels: int) -> torch.Tensor:
    """Map ``(B, n_features, ...)`` raw features to [0, 1] by their theoretical ranges (see module doc)."""
    scaled = []
    for index, name in enumerate(names):
        value = features[:, index]
        if name == "contrast":
            value = value / (levels - 1) ** 2
        elif name == "dissimilarity":
            value = value / (levels - 1)
        elif name == "correlation":
            value = (value + 1) / 2
        elif name not in ("ASM", "homogeneity", "energy"):
            raise ValueError(f"no normalisation range known for feature {name!r}")
        scaled.append(value)
    return torch.stack(scaled, dim=1)


def second_order_texture(
    gray: torch.Tensor,
    *,
    levels: int = 32,
    distance: int = 3,
    sigma: float | None = None,
    angles: tuple[float, ...] = PAPER_ANGLES,
) -> torch.Tensor:
    """Normalised SOT features ``(B, 5 · len(angles))`` of gray images ``(B, H, W)`` in [0, 1].

    Ordered feature-major (the 5 features of :data:`PAPER_FEATURES`, each for every angle).
    """
    glcm = soft_cooccurrence(gray.clamp(0, 1), levels, [distance], list(angles), sigma=sigma)
    features = texture_features(glcm, PAPER_FEATURES)[:, :, 0, :]  # (B, 5, n_angles)
    return normalise_features(features, PAPER_FEATURES, levels).flatten(1)


def glcm_loss(
    colorized: torch.Tensor,
    original: torch.Tensor,
    *,
    levels: int = 32,
    distance: int = 3,
    sigma: float | None = None,
) -> torch.Tensor:
    """Paper 000 eq. 19 for a batch: max over images of the L1 distance of their 40 SOT features.

    Args:
        colorized: ``C(X)``, ``(B, 3, H, W)`` in [0, 1]; converted to gray first.
        original: ``X``, ``(B, C, H, W)`` in [0, 1] (gray, or RGB converted to gray).
        levels: Grey levels of the soft GLCM.
        distance: Pixel distance of the co-occurrences (3 in the paper).
        sigma: Width of the soft binning (default half a bin).

    Returns:
        A scalar; differentiable with respect to ``colorized`` (``original`` is detached).
    """
    if colorized.shape[0] != original.shape[0] or colorized.shape[2:] != original.shape[2:]:
        raise ValueError(f"shapes differ: {tuple(colorized.shape)} vs {tuple(original.shape)}")
    ours = second_order_texture(
        grayscale(colorized), levels=levels, distance=distance, sigma=sigma, angles=DISTINCT_ANGLES
    )
    with torch.no_grad():
        reference = second_order_texture(
            grayscale(original), levels=levels, distance=distance, sigma=sigma, angles=DISTINCT_ANGLES
        )
    per_image = 2 * (ours - reference).abs().sum(dim=1)  # θ and θ + 180° give equal features
    return per_image.max()
