"""HopSkipJump (Chen et al., 2020) through ART's ``HopSkipJump``: decision-based black box."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from art.attacks.evasion import HopSkipJump as ARTHopSkipJump
from art.config import ART_NUMPY_DTYPE

from medbench.api import CLASSIFICATION, Attack, AttackResult, ThreatModel
from medbench.api.toolkit import counting_queries
from medbench_art._art_bridge import seed_everything
from medbench_art._classification import project_l2, project_linf, require_single_label

QUERY_BATCH = 256
"""Rows per ``predict`` call at most, when HSJ estimates a gradient from many queries."""


class Float32HopSkipJump(ARTHopSkipJump):
    """ART's HopSkipJump, with every queried batch cast to float32.

    ART's binary search interpolates with float64 coefficients, and a float64 batch reaches a
    float32 PyTorch model through the framework-native preprocessing unchanged ("Input type
    (double) and bias type (float) should be the same").
    """

    def _adversarial_satisfactory(
        self, samples: np.ndarray, target: int, clip_min: float, clip_max: float
    ) -> np.ndarray:
        return super()._adversarial_satisfactory(samples.astype(ART_NUMPY_DTYPE), target, clip_min, clip_max)


@dataclass(frozen=True)
class HSJSettings:
    """HopSkipJump settings (kept small so that a cell finishes on a CPU).

    Attributes:
        norm: ``linf`` (default) or ``l2``: the distance HSJ minimises, and the ball the
            budget ε bounds (threat model ``linf`` or ``l2``).
        max_iter: Boundary-walk iterations per sample (10; ART's default is 50).
        max_eval: Most queries per gradient estimate (1000; ART: 10000).
        init_eval: Queries of the first gradient estimate; iteration t uses
            ``min(init_eval·√(t+1), max_eval)`` (100, ART's).
        init_size: Uniform-noise images tried per sample to find a starting point that is
            already misclassified (100, ART's); a sample without one is left unchanged.
    """

    norm: Literal["linf", "l2"] = "linf"
    max_iter: int = 10
    max_eval: int = 1000
    init_eval: int = 100
    init_size: int = 100

    def validate(self) -> None:
        if self.max_iter < 1:
            raise ValueError("max_iter must be >= 1")
        if self.init_eval < 1 or self.max_eval < self.init_eval:
            raise ValueError("init_eval must be >= 1 and max_eval >= init_eval")
        if self.init_size < 1:
            raise ValueError("init_size must be >= 1")


class HopSkipJump(Attack):
    """HopSkipJump bounded by ε: ART's decision-based attack (it sees only predicted labels)
    searches the minimal perturbation in the chosen norm; the result is projected onto the
    ε-ball of that norm (L∞: clipped; L2: scaled down to length ε).

    HSJ minimises the distance to the decision boundary and has no budget of its own; medbench
    bounds it so that it fills the same robustness curve as ``square`` and ``pgd`` (a sample
    counts as broken when HSJ found a misclassified point within ε), while ``linf_max`` /
    ``l2_mean`` still show how far inside the ball it got. Only samples the model classifies
    correctly are attacked. The starting points (uniform noise, as ART draws them) come from
    a generator seeded by the cell, which ART's own start does not allow. The rows sent to
    ``estimator.predict`` are returned as ``queries`` (logged as ``queries_mean``).
    """

    name = "hsj"
    description = "HopSkipJump, decision-based black box, projected onto the ε-ball; logs queries (ART)"
    tasks = CLASSIFICATION
    budget_name = "eps"
    Settings = HSJSettings

    @property
    def threat_model(self) -> ThreatModel:
        """``linf`` or ``l2``, following the ``norm`` setting."""
        settings: HSJSettings = self.settings
        return settings.norm

    @property
    def default_budgets(self) -> tuple[float, ...]:
        """4/255 and 8/255 under L∞; 0.5 and 1.0 under L2."""
        return (4 / 255, 8 / 255) if self.settings.norm == "linf" else (0.5, 1.0)

    def generate(
        self, estimator: Any, x: torch.Tensor, y: torch.Tensor, budget: float, *, seed: int
    ) -> AttackResult:
        require_single_label(self.name, estimator, y)
        if budget == 0:
            return AttackResult(x.detach().clone(), {"queries": 0.0})
        settings: HSJSettings = self.settings
        batch_size = max(len(x), QUERY_BATCH)
        seed_everything(seed)
        x_np = x.detach().cpu().numpy().astype(ART_NUMPY_DTYPE)
        y_np = y.detach().cpu().numpy()
        x_adv = x_np.copy()
        with counting_queries(estimator) as count:
            predicted = np.argmax(estimator.predict(x_np, batch_size=batch_size), axis=1)
            todo = np.flatnonzero(predicted == y_np)
            starts, found = _random_starts(estimator, x_np[todo], y_np[todo], settings.init_size, seed)
            chosen = todo[found]
            if len(chosen):
                attack = Float32HopSkipJump(
                    estimator,
                    batch_size=batch_size,
                    targeted=False,
                    norm=np.inf if settings.norm == "linf" else 2,
                    max_iter=settings.max_iter,
                    max_eval=settings.max_eval,
                    init_eval=settings.init_eval,
                    init_size=settings.init_size,
                    verbose=False,
                )
                x_adv[chosen] = attack.generate(x_np[chosen], y=y_np[chosen], x_adv_init=starts[found])
        result = torch.from_numpy(x_adv).to(x.device)
        project = project_linf if settings.norm == "linf" else project_l2
        return AttackResult(project(x, result, budget), {"queries": float(count.queries)})


def _random_starts(
    estimator: Any, x: np.ndarray, y: np.ndarray, tries: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Uniform-noise images that the model does not assign to ``y``, one per sample.

    Returns:
        The starting points and a mask of the samples for which one was found in ``tries``
        draws (ART's ``init_size``), drawn in batches from a generator seeded by ``seed``.
    """
    generator = np.random.default_rng(seed)
    starts = np.zeros_like(x)
    found = np.zeros(len(x), dtype=bool)
    for _ in range(tries):
        missing = np.flatnonzero(~found)
        if not len(missing):
            break
        noise = generator.uniform(0.0, 1.0, size=(len(missing), *x.shape[1:])).astype(ART_NUMPY_DTYPE)
        hits = np.argmax(estimator.predict(noise, batch_size=max(len(noise), 1)), axis=1) != y[missing]
        starts[missing[hits]] = noise[hits]
        found[missing[hits]] = True
    return starts, found
