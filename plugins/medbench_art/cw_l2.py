"""C&W L2 (Carlini & Wagner, 2017) through ART's ``CarliniL2Method``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from art.attacks.evasion import CarliniL2Method

from medbench.api import CLASSIFICATION, Attack
from medbench_art._art_bridge import run_art_attack
from medbench_art._classification import project_l2, require_single_label


@dataclass(frozen=True)
class CWL2Settings:
    """C&W L2 settings (ART's defaults).

    Attributes:
        max_iter: Optimisation steps per binary-search step (10; ART adds a line search to
            every step, so it needs far fewer than the original attack's Adam steps).
        binary_search_steps: Binary-search steps over the trade-off constant c (10).
        learning_rate: Initial step of the optimiser in tanh space (0.01).
        initial_const: Initial trade-off constant c (0.01).
        max_norm: None (default): the minimal-perturbation attack, unbounded; its achieved
            perturbation is logged per cell as ``l2_mean``. A number turns it into an attack
            bounded in L2: every sample whose perturbation is longer is **projected onto the
            L2 ball** of that radius (``δ ← δ·max_norm/‖δ‖₂``), i.e. it keeps the direction
            C&W found at the largest allowed length. Such a sample usually stops being
            adversarial, so robust accuracy becomes that of a bounded attack at ``max_norm``;
            returning the clean input instead could never be adversarial, the projection can.
    """

    max_iter: int = 10
    binary_search_steps: int = 10
    learning_rate: float = 0.01
    initial_const: float = 0.01
    max_norm: float | None = None

    def validate(self) -> None:
        if self.max_iter < 1:
            raise ValueError("max_iter must be >= 1")
        if self.binary_search_steps < 1:
            raise ValueError("binary_search_steps must be >= 1")
        if self.learning_rate <= 0:
            raise ValueError("learning_rate must be > 0")
        if self.initial_const <= 0:
            raise ValueError("initial_const must be > 0")
        if self.max_norm is not None and self.max_norm < 0:
            raise ValueError("max_norm must be >= 0 (or none for the unbounded attack)")


class CWL2(Attack):
    """Minimal-perturbation C&W L2: the smallest ``‖δ‖₂`` found that makes the logit of the
    label fall at least κ (the budget ``confidence``) below another class's.

    Threat model ``l2-minimal``: the budget is a margin, not a norm bound, so the harness
    checks only the [0, 1] range; the achieved L2 is the cell's ``l2_mean``. With the setting
    ``max_norm`` the perturbations are additionally projected onto the L2 ball of that radius.
    Deterministic (C&W has no random start), single-label classification only.
    """

    name = "cw-l2"
    description = "Carlini & Wagner L2, minimal perturbation (budget: confidence κ; ART CarliniL2Method)"
    threat_model = "l2-minimal"
    tasks = CLASSIFICATION
    budget_name = "confidence"
    default_budgets = (0.0,)
    budget_on_intensity_scale = False
    Settings = CWL2Settings

    def generate(
        self, estimator: Any, x: torch.Tensor, y: torch.Tensor, budget: float, *, seed: int
    ) -> torch.Tensor:
        require_single_label(self.name, estimator, y)
        settings: CWL2Settings = self.settings
        attack = CarliniL2Method(
            estimator,
            confidence=budget,
            learning_rate=settings.learning_rate,
            binary_search_steps=settings.binary_search_steps,
            max_iter=settings.max_iter,
            initial_const=settings.initial_const,
            batch_size=max(len(x), 1),
            verbose=False,
        )
        x_adv = run_art_attack(attack, x, y, seed)
        if settings.max_norm is not None:
            x_adv = project_l2(x, x_adv, settings.max_norm)
        return x_adv
