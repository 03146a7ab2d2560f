"""FGSM (Goodfellow et al., 2015): ``clip(x + ε·sign(∇ₓ L), 0, 1)``, one gradient for every ε.

The step is ART's ``FastGradientMethod`` with ``eps_step = eps`` (tests compare the two), taken
in torch on the estimator's device: the gradient comes from the estimator's own
``loss_gradient`` (its normalisation, defences, BPDA and EOT included). A matrix that runs FGSM
at several budgets computes that gradient once per batch and reuses it for every ε
(:meth:`FGSM.generate_budgets`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from medbench.api import ALL_TASKS, Attack, AttackResult
from medbench.api.toolkit import input_gradient


class FGSM(Attack):
    """One signed-gradient step of size ε: ``clip(x + ε·sign(∇ₓ CE), 0, 1)``."""

    name = "fgsm"
    description = "Fast Gradient Sign Method, one L∞ step of size ε (ART FastGradientMethod, in torch)"
    threat_model = "linf"
    tasks = ALL_TASKS
    budget_name = "eps"
    default_budgets = (1 / 255, 2 / 255, 4 / 255, 8 / 255)

    @dataclass(frozen=True)
    class Settings:
        """FGSM has no tunable parameter besides the budget."""

    def generate(
        self, estimator: Any, x: torch.Tensor, y: torch.Tensor, budget: float, *, seed: int
    ) -> torch.Tensor:
        (x_adv,) = self.generate_budgets(estimator, x, y, [budget], seeds=[seed])
        assert isinstance(x_adv, torch.Tensor)
        return x_adv

    def generate_budgets(
        self,
        estimator: Any,
        x: torch.Tensor,
        y: torch.Tensor,
        budgets: Sequence[float],
        *,
        seeds: Sequence[int],
    ) -> list[torch.Tensor | AttackResult]:
        if all(budget == 0 for budget in budgets):
            return [x.detach().clone() for _ in budgets]
        direction = input_gradient(estimator, x.detach(), y).sign()
        return [(x.detach() + budget * direction).clamp(0.0, 1.0) for budget in budgets]
