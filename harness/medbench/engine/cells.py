"""The matrix's vocabulary: cells, their results, the validated plan, and a cell's identity.

A **cell** is one (model, defense, attack, budget). Its **key** (:func:`cell_key`) is a hash
of everything that defines its result; a FINISHED run with the same key is reused instead
of run again (resume). Nothing here touches MLflow, torch devices or plugins' code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch

from medbench import __version__
from medbench.building.cache import stable_hash
from medbench.config.budgets import Budget, format_budget

if TYPE_CHECKING:
    from medbench.api import Attack, Dataset, DatasetBundle, Defense, Metric, Model
    from medbench.building.training import TrainingHistory
    from medbench.config.spec import RunSpec


@dataclass
class Cell:
    """One (model, defense, attack, budget) combination."""

    index: int
    model: str
    defense: str
    attack: str
    budget_name: str
    budget: float
    threat_model: str
    budget_native: str | None = None
    """The budget as given in the data's intensity unit (``5HU``); None for [0, 1]-scale budgets."""
    surrogate: str | None = None
    """``MODEL:DEFENSE`` the adversarial examples were crafted on (transfer); None: the target."""
    key: str = ""
    run_id: str | None = None

    @property
    def threat(self) -> str:
        """``transfer`` when crafted on a surrogate, ``direct`` when on the target itself."""
        return "direct" if self.surrogate is None else "transfer"

    @property
    def label(self) -> str:
        """``smallcnn/at-pgd/pgd@8/255``: model, defense, attack and budget as users type them."""
        return f"{self.model}/{self.defense}/{self.attack}@{self.budget_text}"

    @property
    def budget_text(self) -> str:
        """The budget as labels show it: ``5HU``, else ``8/255``."""
        return self.budget_native or format_budget(self.budget)


@dataclass
class CellResult:
    """What a cell ended with."""

    cell: Cell
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    samples: dict[str, Any] | None = None
    """The per-sample outcomes of a cell run here (:mod:`medbench.measuring.per_sample`);
    None for a failed cell, or one reused from the store (read them with
    :func:`medbench.results.Results.samples`)."""


@dataclass
class Surrogate:
    """The model transfer attacks are crafted on (``--surrogate MODEL[:DEFENSE]``).

    It is trained on the same data with seed + 1, so that even the target's own architecture
    and defense give an independently trained surrogate.
    """

    model_name: str
    model: Model
    defense: str
    chain: list[Defense]

    @property
    def label(self) -> str:
        return f"{self.model_name}:{self.defense}"


@dataclass
class MatrixPlan:
    """A validated matrix, ready to run (built by :func:`medbench.engine.planning.plan_matrix`)."""

    spec: RunSpec
    dataset: Dataset
    bundle: DatasetBundle
    models: dict[str, Model]
    defenses: dict[str, list[Defense]]
    attacks: dict[str, Attack]
    budgets: dict[str, list[Budget]]
    """Per attack label, its budgets (unit budgets converted to the [0, 1] scale)."""
    metrics: list[Metric]
    cells: list[Cell]
    device: torch.device
    n_eval: int
    experiment: str
    plugin_versions: dict[str, str]
    surrogate: Surrogate | None = None
    parent_run_id: str | None = None
    batch_size: int | None = None
    """The evaluation batch size once the runner chose it (``eval_batch_size``, or what ``auto``
    chose on this device); None before."""
    model_identities: dict[str, Any] = field(default_factory=dict)
    """Per model name, what identifies a model that is not a plugin (a user's module, factory
    or checkpoint: hashes of its code and weights), part of every cell key; empty for plugins."""

    def budget_text(self, attack: str) -> str:
        """``2/255,8/255``, or ``5HU (3/255),10HU (6/255)`` for unit budgets."""
        return ",".join(budget.described for budget in self.budgets[attack])

    def budget_values(self, attack: str) -> list[float]:
        """The budgets of one attack on the [0, 1] scale."""
        return [budget.value for budget in self.budgets[attack]]


class ProgressSink(Protocol):
    """Receives progress events (see :mod:`medbench.reporting.progress`)."""

    def start_matrix(self, total_cells: int) -> None: ...
    def start_cell(self, cell: Cell, total_batches: int) -> None: ...
    def advance_cell(self) -> None: ...
    def end_cell(self, result: CellResult) -> None: ...
    def training(self, label: str, epoch: int, epochs: int, loss: float, val_accuracy: float) -> None: ...
    def trained(self, label: str, history: TrainingHistory) -> None: ...
    def message(self, text: str) -> None: ...


def make_cells(plan: MatrixPlan) -> list[Cell]:
    """The plan's cells, models outermost, then defenses, attacks and budgets."""
    cells: list[Cell] = []
    for model_name in plan.models:
        for defense_name in plan.defenses:
            for attack_name, attack in plan.attacks.items():
                for budget in plan.budgets[attack_name]:
                    cell = Cell(
                        index=len(cells),
                        model=model_name,
                        defense=defense_name,
                        attack=attack_name,
                        budget_name=attack.budget_name,
                        budget=budget.value,
                        budget_native=budget.native,
                        threat_model=attack.threat_model,
                        surrogate=plan.surrogate.label if plan.surrogate else None,
                    )
                    cell.key = cell_key(plan, cell)
                    cells.append(cell)
    return cells


def cell_key(plan: MatrixPlan, cell: Cell) -> str:
    """Hash of everything that defines a cell's result (``medbench.cell_key``)."""
    identity = plan.model_identities.get(cell.model)
    return stable_hash(
        {
            "medbench": __version__,
            "dataset": plan.bundle.fingerprint,
            "model": [cell.model, plan.models[cell.model].settings_dict(), plan.spec.weights],
            "defense": [[d.name, d.settings_dict()] for d in plan.defenses[cell.defense]],
            "training": plan.spec.training,
            "attack": [cell.attack, plan.attacks[cell.attack].settings_dict()],
            "budget": [cell.budget_name, cell.budget],
            "n_eval": plan.n_eval,
            "seed": plan.spec.seed,
            "eot_samples": plan.spec.eot_samples,
            **_surrogate_identity(plan),
            # bf16 changes results (beyond float noise), so it is part of the key (absent for
            # fp32, so old keys stay valid); channels-last, torch.compile and cuDNN autotuning
            # only reorder float32 arithmetic, like cuDNN's own kernel choice: not in the key
            **({"precision": plan.spec.precision} if plan.spec.precision != "fp32" else {}),
            # the contents of user models and weights files (absent for plugin models without
            # files, so old keys stay valid)
            **({"model_identity": identity} if identity else {}),
        },
        length=32,
    )


def _surrogate_identity(plan: MatrixPlan) -> dict[str, Any]:
    """The surrogate's part of a cell key (absent without one, so old keys stay valid)."""
    surrogate = plan.surrogate
    if surrogate is None:
        return {}
    return {
        "surrogate": [
            surrogate.model_name,
            surrogate.model.settings_dict(),
            [[d.name, d.settings_dict()] for d in surrogate.chain],
        ],
    }


def cell_seed(plan: MatrixPlan, cell: Cell) -> int:
    """A per-cell seed derived from the run's seed, the defense, the attack and the budget.

    Not from the model's name: every model of a matrix meets the same random starts and noise
    (common random numbers, which sharpen paired comparisons between rows), and a model gives
    the same numbers whatever it is called (``medbench.evaluate`` names a module by its class,
    the CLI by its factory's path).
    """
    identity = f"{cell.defense}/{cell.attack}@{cell.budget_text}"
    return int(stable_hash({"seed": plan.spec.seed, "cell": identity}, length=8), 16)
