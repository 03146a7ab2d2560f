"""Running an ART evasion attack on torch tensors.

ART's attacks take and return NumPy arrays; the PyTorch paths (PGD, BIM, MI-FGSM on a
``PyTorchClassifier`` with framework-native preprocessing) keep every iteration on the
device and convert only once per batch, at the start and at the end.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np
import torch

from medbench.api import Attack


def seed_everything(seed: int) -> None:
    """ART draws random starts from NumPy's global generator; torch for noise."""
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def run_art_attack(attack: Any, x: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
    """Run ``attack.generate`` on one batch and return the result on ``x``'s device.

    Args:
        attack: An ART ``EvasionAttack`` built on the estimator.
        x: Clean inputs in [0, 1].
        y: True labels (class indices, or multi-hot for multi-label data).
        seed: Seeds random starts.
    """
    seed_everything(seed)
    x_np = x.detach().cpu().numpy().astype(np.float32, copy=False)
    y_np = y.detach().cpu().numpy()
    x_adv = attack.generate(x=x_np, y=y_np)
    return torch.from_numpy(np.asarray(x_adv, dtype=np.float32)).to(x.device)


class ARTEvasionAttack(Attack):
    """Base of the attacks that run an ART ``EvasionAttack``: subclasses implement :meth:`make`.

    A zero budget returns the input unchanged (ART refuses a zero step size).
    """

    @abstractmethod
    def make(self, estimator: Any, budget: float, batch_size: int) -> Any:
        """Build the ART attack object for one budget."""

    def generate(
        self, estimator: Any, x: torch.Tensor, y: torch.Tensor, budget: float, *, seed: int
    ) -> torch.Tensor:
        if budget == 0:
            return x.detach().clone()
        return run_art_attack(self.make(estimator, budget, max(len(x), 1)), x, y, seed)
