"""``lpips_sim``: 1 − LPIPS over the axial slices of a volume, as paper 003 reports it.

LPIPS (Zhang et al., 2018) needs the ``lpips`` package (its linear calibration layers ship
inside it) and torchvision's ImageNet AlexNet weights. Nothing is downloaded: the AlexNet file
``alexnet-owt-7be5be79.pth`` is read from ``$MEDBENCH_WEIGHTS_DIR`` or the torch hub cache,
and when either piece is missing the metric is left out with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
_SLICES = {1: range(0, 2), 2: range(2, 5), 3: range(5, 8), 4: range(8, 10), 5: range(10, 12)}
"""How the ``lpips`` package cuts AlexNet's ``features`` into its five slices."""


def alexnet_weights() -> Path | None:
    """The local AlexNet weights file, or None."""
    folders = [Path(os.environ["MEDBENCH_WEIGHTS_DIR"])] if os.environ.get("MEDBENCH_WEIGHTS_DIR") else []
    folders.append(Path(torch.hub.get_dir()) / "checkpoints")
    for folder in folders:
        if (folder / ALEXNET_FILE).is_file():
            return folder / ALEXNET_FILE
    return None


def lpips_similarity(device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | str:
    """A function ``(x, x_adv) -> (N,)`` of per-volume LPIPS similarities, or why there is none.

    For each volume ``(1, D, H, W)`` in [0, 1], the D axial slices are compared with LPIPS
    (AlexNet, version 0.1) on inputs mapped to [−1, 1], and the similarity is
    ``1 − mean over slices``: higher is more similar, as in paper 003's tables.
    """
    try:
        import lpips
    except ImportError:
        return "the 'lpips' package is not installed (pip install lpips)"
    weights = alexnet_weights()
    if weights is None:
        hub = Path(torch.hub.get_dir()) / "checkpoints"
        return f"AlexNet weights not found: put {ALEXNET_FILE} in {hub} or in $MEDBENCH_WEIGHTS_DIR"
    model = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    features = torch.load(weights, map_location="cpu", weights_only=True)
    state = {
        f"slice{number}.{index}.{kind}": features[f"features.{index}.{kind}"]
        for number, indices in _SLICES.items()
        for index in indices
        for kind in ("weight", "bias")
        if f"features.{index}.{kind}" in features
    }
    model.net.load_state_dict(state, strict=True)
    model.to(device).eval()

    def similarity(x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
        values = []
        with torch.no_grad():
            for clean, adversarial in zip(x, x_adv, strict=True):
                slices = clean[0].unsqueeze(1) * 2 - 1
                adv_slices = adversarial[0].unsqueeze(1) * 2 - 1
                values.append(1 - model(slices, adv_slices).mean())
        return torch.stack(values)

    return similarity
