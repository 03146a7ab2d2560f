"""The attack matrix: models × defenses × attacks × budgets on one dataset.

:func:`plan_matrix` resolves and validates everything (names, settings, budgets, data)
before anything is written to MLflow, so that bad input never leaves half-written runs.
:class:`MatrixRunner` then trains (or loads) each defended model once, computes its clean
predictions once, and runs every attack cell against it, logging each cell as a nested
MLflow run. A failure inside a cell marks that cell FAILED and the matrix goes on.
"""

from __future__ import annotations

import functools
import math
import os
import socket
import tempfile
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import torch

from medbench import __version__
from medbench.acceleration import (
    CPU_EVAL_BATCH_SIZE,
    PROBE_BATCH_SIZE,
    Acceleration,
    BatchChoice,
    choose_batch_size,
    free_device_bytes,
    gradient_bytes_per_sample,
    out_of_memory,
    split_batches,
)
from medbench.api import (
    Attack,
    AttackResult,
    CellOutputs,
    Dataset,
    DatasetBundle,
    DefendedModel,
    Defense,
    Metric,
    Model,
)
from medbench.budgets import Budget, UnitBudget, format_budget, to_intensity_scale
from medbench.cache import ModelCache, stable_hash
from medbench.defending import (
    CHAIN_SEPARATOR,
    STANDARD_DEFENSE,
    DefenseBuilder,
    check_chain,
    parse_variant,
    split_chain,
    variant_label,
)
from medbench.errors import CellError, UsageError, unknown_name_message
from medbench.estimators import frozen_parameters
from medbench.evaluation import (
    Batch,
    ClassificationEvaluator,
    CleanOutputs,
    SegmentationEvaluator,
    TaskEvaluator,
    add_totals,
    as_attack_result,
    craft_splitting_on_oom,
    eval_batches,
)
from medbench.gradient_checks import group_checks
from medbench.images import image_rows
from medbench.lpips_similarity import lpips_similarity
from medbench.plugins import PluginHost
from medbench.sanity import Flag
from medbench.spec import AUTO, RunSpec
from medbench.tracking import Tracker
from medbench.training import TrainingHistory

RANGE_TOLERANCE = 1e-6
LINF_TOLERANCE = 1e-6
L2_TOLERANCE = 1e-5


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
        budget = self.budget_native or format_budget(self.budget)
        return f"{self.model}/{self.defense}/{self.attack}@{budget}"


@dataclass
class CellResult:
    """What a cell ended with."""

    cell: Cell
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None


@dataclass
class MatrixPlan:
    """A validated matrix, ready to run."""

    spec: RunSpec
    dataset: Dataset
    bundle: DatasetBundle
    models: dict[str, Model]
    defenses: dict[str, list[Defense]]
    attacks: dict[str, Attack]
    budgets: dict[str, list[float]]
    """Per attack, its budgets on the [0, 1] scale (unit budgets converted)."""
    metrics: list[Metric]
    cells: list[Cell]
    device: torch.device
    n_eval: int
    experiment: str
    plugin_versions: dict[str, str]
    surrogate: Surrogate | None = None
    parent_run_id: str | None = None
    native_budgets: dict[str, list[str | None]] = field(default_factory=dict)
    batch_size: int | None = None
    """The evaluation batch size once the runner chose it (``eval_batch_size``, or what ``auto``
    chose on this device); None before."""
    """Per attack, parallel to :attr:`budgets`: the unit budget as given (``5HU``), else None."""

    def budget_text(self, attack: str) -> str:
        """``2/255,8/255``, or ``5HU (3/255),10HU (6/255)`` for unit budgets."""
        natives = self.native_budgets.get(attack) or [None] * len(self.budgets[attack])
        return ",".join(
            f"{native} ({format_budget(value)})" if native else format_budget(value)
            for value, native in zip(self.budgets[attack], natives, strict=True)
        )


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


class ProgressSink(Protocol):
    """Receives progress events (see :mod:`medbench.progress`)."""

    def start_matrix(self, total_cells: int) -> None: ...
    def start_cell(self, cell: Cell, total_batches: int) -> None: ...
    def advance_cell(self) -> None: ...
    def end_cell(self, result: CellResult) -> None: ...
    def training(self, label: str, epoch: int, epochs: int, loss: float, val_accuracy: float) -> None: ...
    def trained(self, label: str, history: TrainingHistory) -> None: ...
    def message(self, text: str) -> None: ...


# --------------------------------------------------------------------------- planning


def _apply_set_overrides(spec: RunSpec, assignments: Iterable[tuple[str, str, str, str]]) -> None:
    for kind, name, key, value in assignments:
        spec.settings.setdefault(kind, {}).setdefault(name, {})[key] = value


def _check_settings_names(spec: RunSpec, host: PluginHost) -> None:
    tables: dict[str, Any] = {
        "attack": host.registries.attacks,
        "defense": host.registries.defenses,
        "model": host.registries.models,
        "dataset": host.registries.datasets,
    }
    for kind, by_name in spec.settings.items():
        for name in by_name:
            if name not in tables[kind]:
                raise UsageError(f"settings for {unknown_name_message(kind, name, tables[kind].names())}")


def resolve_budgets(
    attack: Attack,
    spec_budgets: dict[str, list[Budget]],
    eps_override: list[Budget] | None,
    budget_overrides: dict[str, list[Budget]],
) -> list[Budget]:
    """Budgets of one attack, by priority.

    ``--budget ATTACK=`` or ``--budget BUDGET_NAME=``, then ``--eps`` (attacks whose budget
    is on the intensity scale), then the spec's ``budgets`` by attack name, then by budget
    name, then the attack's own default grid.
    """
    for source in (budget_overrides,):
        if attack.name in source:
            return source[attack.name]
        if attack.budget_name in source:
            return source[attack.budget_name]
    if eps_override is not None and attack.budget_on_intensity_scale:
        return eps_override
    if attack.name in spec_budgets:
        return spec_budgets[attack.name]
    if attack.budget_name in spec_budgets:
        return spec_budgets[attack.budget_name]
    return list(attack.default_budgets)


def _convert_unit_budgets(
    requested: dict[str, list[Budget]], attacks: dict[str, Attack], bundle: DatasetBundle, dataset: str
) -> tuple[dict[str, list[float]], dict[str, list[str | None]]]:
    """Unit budgets (``5HU``) to the [0, 1] scale through the dataset's intensity window.

    Returns the budgets on the [0, 1] scale and, in parallel, the unit budgets as given.
    """
    budgets: dict[str, list[float]] = {}
    native: dict[str, list[str | None]] = {}
    for name, values in requested.items():
        attack = attacks[name]
        for value in values:
            if isinstance(value, UnitBudget) and not attack.budget_on_intensity_scale:
                raise UsageError(
                    f"budget {value.text}: {attack.budget_name} of attack {name!r} is not an intensity"
                )
        budgets[name] = [
            to_intensity_scale(v, bundle.intensity_window, bundle.intensity_unit, dataset) for v in values
        ]
        native[name] = [v.text if isinstance(v, UnitBudget) else None for v in values]
    return budgets, native


def _check_task(kind: str, name: str, tasks: frozenset[str], task: str) -> None:
    if task not in tasks:
        raise UsageError(f"{kind} {name!r} does not support {task} (supports: {', '.join(sorted(tasks))})")


def load_dataset(dataset: Dataset, data_dir: Path | None, seed: int) -> DatasetBundle:
    """Load a dataset, turning unexpected loader errors into one-line usage errors."""
    if dataset.needs_data_dir and data_dir is None:
        layout = f"; expected layout: {dataset.layout}" if dataset.layout else ""
        raise UsageError(f"dataset {dataset.name!r} reads local files: give --data-dir PATH{layout}")
    if data_dir is not None and not data_dir.exists():
        raise UsageError(f"data path does not exist: {data_dir}")
    try:
        return dataset.load(data_dir, seed)
    except UsageError:
        raise
    except Exception as error:
        raise UsageError(f"dataset {dataset.name!r} failed to load from {data_dir}: {error}") from error


def plan_matrix(
    spec: RunSpec,
    host: PluginHost,
    device: torch.device,
    *,
    eps_override: list[Budget] | None = None,
    budget_overrides: dict[str, list[Budget]] | None = None,
    assignments: Iterable[tuple[str, str, str, str]] = (),
    experiment: str | None = None,
) -> MatrixPlan:
    """Resolve every name, setting, budget and the data; raise :class:`UsageError` on bad input."""
    budget_overrides = budget_overrides or {}
    _apply_set_overrides(spec, assignments)
    _check_settings_names(spec, host)
    registries = host.registries

    dataset = registries.datasets.get(spec.dataset).configured(spec.plugin_settings("dataset", spec.dataset))
    task = dataset.task

    models: dict[str, Model] = {name: _resolve_model(name, spec, host, dataset) for name in spec.models}

    defenses: dict[str, list[Defense]] = {}
    for chain_name in spec.defenses:
        label, chain = _resolve_chain(chain_name, spec, host, task)
        if label in defenses:
            raise UsageError(f"defense {label!r} is listed twice")
        defenses[label] = chain
    surrogate = _resolve_surrogate(spec, host, dataset) if spec.surrogate else None
    if STANDARD_DEFENSE not in registries.defenses:
        raise UsageError(
            f"the standard-training defense {STANDARD_DEFENSE!r} is not registered "
            "(is the plugin 'art' disabled?)"
        )

    attacks: dict[str, Attack] = {}  # by label: ``pgd``, or a variant such as ``pgd[max_iter=50]``
    for element in spec.attacks:
        label, attack = _resolve_variant("attack", element, spec, host, task)
        attacks.setdefault(label, attack)  # one cell per label, however spelt

    known_budget_names = set(attacks) | {a.budget_name for a in attacks.values()}
    registered = registries.attacks.names()
    every_budget_name = set(registered) | {registries.attacks.get(n).budget_name for n in registered}
    for name in spec.budgets:  # a suite may list budgets of attacks a run leaves out, not unknown ones
        if name not in every_budget_name:
            raise UsageError(
                f"spec budgets: {unknown_name_message('attack or budget name', name, every_budget_name)}"
            )
    for name in budget_overrides:
        if name not in known_budget_names:
            raise UsageError(
                f"--budget: {unknown_name_message('attack or budget name', name, known_budget_names)}"
            )
    requested = {
        name: resolve_budgets(a, spec.budgets, eps_override, budget_overrides) for name, a in attacks.items()
    }

    metrics = [m for m in registries.metrics if task in m.tasks]
    bundle = load_dataset(dataset, spec.data_dir, spec.seed)
    test_size = len(bundle.test)  # type: ignore[arg-type]
    if test_size == 0:
        raise UsageError(f"dataset {dataset.name!r} has an empty test split")
    if spec.n_eval is not None and spec.n_eval > test_size:
        raise UsageError(f"--n-eval {spec.n_eval} is larger than the test split ({test_size} samples)")
    n_eval = spec.n_eval or test_size
    budgets, native_budgets = _convert_unit_budgets(requested, attacks, bundle, dataset.name)

    involved = {host.registries.datasets.owner(dataset.name)}
    involved |= {registries.models.owner(n) for n in models}
    involved |= {registries.defenses.owner(d.name) for chain in defenses.values() for d in chain}
    involved |= {registries.defenses.owner(STANDARD_DEFENSE)}
    if surrogate is not None:
        involved |= {registries.models.owner(surrogate.model_name)}
        involved |= {registries.defenses.owner(d.name) for d in surrogate.chain}
    involved |= {registries.attacks.owner(a.name) for a in attacks.values()}
    versions = {info.name: info.version for info in host.infos if info.name in involved}

    plan = MatrixPlan(
        spec=spec,
        dataset=dataset,
        bundle=bundle,
        models=models,
        defenses=defenses,
        attacks=attacks,
        budgets=budgets,
        metrics=metrics,
        cells=[],
        device=device,
        n_eval=n_eval,
        experiment=experiment or spec.name,
        plugin_versions=versions,
        surrogate=surrogate,
        native_budgets=native_budgets,
    )
    plan.cells = _make_cells(plan)
    return plan


def _resolve_model(name: str, spec: RunSpec, host: PluginHost, dataset: Dataset) -> Model:
    model: Model = host.registries.models.get(name).configured(spec.plugin_settings("model", name))
    _check_task("model", name, model.tasks, dataset.task)
    if model.dims != dataset.dims:
        raise UsageError(f"model {name!r} is {model.dims}D but dataset {dataset.name!r} is {dataset.dims}D")
    return model


def _resolve_variant(kind: str, element: str, spec: RunSpec, host: PluginHost, task: str) -> tuple[str, Any]:
    """The canonical label and the configured plugin of ``name`` or ``name[key=value,...]``.

    The inline settings override the run's (``--set``) settings of that plugin.
    """
    name, variant = parse_variant(element)
    registry = host.registries.attacks if kind == "attack" else host.registries.defenses
    plugin = registry.get(name).configured({**spec.plugin_settings(kind, name), **variant})
    _check_task(kind, name, plugin.tasks, task)
    return variant_label(name, variant), plugin


def _resolve_chain(chain_name: str, spec: RunSpec, host: PluginHost, task: str) -> tuple[str, list[Defense]]:
    """The label and the configured defenses of ``outer+inner[key=value]`` chains."""
    resolved = [_resolve_variant("defense", element, spec, host, task) for element in split_chain(chain_name)]
    chain: list[Defense] = [defense for _, defense in resolved]
    check_chain(chain)
    return CHAIN_SEPARATOR.join(label for label, _ in resolved), chain


def _resolve_surrogate(spec: RunSpec, host: PluginHost, dataset: Dataset) -> Surrogate:
    """``MODEL[:DEFENSE]`` of ``--surrogate``; the defense defaults to standard training."""
    assert spec.surrogate is not None
    model_name, _, chain_name = spec.surrogate.partition(":")
    model_name, chain_name = model_name.strip(), chain_name.strip() or STANDARD_DEFENSE
    if not model_name:
        raise UsageError(f"--surrogate {spec.surrogate!r}: expected MODEL or MODEL:DEFENSE")
    model = _resolve_model(model_name, spec, host, dataset)
    if dataset.task != "classification":
        raise UsageError("--surrogate: transfer attacks are implemented for classification datasets only")
    label, chain = _resolve_chain(chain_name, spec, host, dataset.task)
    return Surrogate(model_name, model, label, chain)


def _make_cells(plan: MatrixPlan) -> list[Cell]:
    cells: list[Cell] = []
    for model_name in plan.models:
        for defense_name in plan.defenses:
            for attack_name, attack in plan.attacks.items():
                natives = plan.native_budgets.get(attack_name) or [None] * len(plan.budgets[attack_name])
                for budget, native in zip(plan.budgets[attack_name], natives, strict=True):
                    cell = Cell(
                        index=len(cells),
                        model=model_name,
                        defense=defense_name,
                        attack=attack_name,
                        budget_name=attack.budget_name,
                        budget=budget,
                        budget_native=native,
                        threat_model=attack.threat_model,
                        surrogate=plan.surrogate.label if plan.surrogate else None,
                    )
                    cell.key = cell_key(plan, cell)
                    cells.append(cell)
    return cells


def cell_key(plan: MatrixPlan, cell: Cell) -> str:
    """Hash of everything that defines a cell's result (``medbench.cell_key``)."""
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
    """A per-cell seed derived from the run's seed and the cell's identity."""
    return int(stable_hash({"seed": plan.spec.seed, "cell": cell.label}, length=8), 16)


def cell_params(plan: MatrixPlan, cell: Cell) -> dict[str, Any]:
    """MLflow params of a cell (DESIGN.md §6)."""
    params: dict[str, Any] = {
        "dataset": plan.dataset.name,
        "model": cell.model,
        "defense": cell.defense,
        "attack": cell.attack,
        "budget_name": cell.budget_name,
        "budget": cell.budget,
        "budget_text": format_budget(cell.budget),
        **({"budget_native": cell.budget_native} if cell.budget_native else {}),
        "threat_model": cell.threat_model,
        "threat": cell.threat,
        "surrogate": cell.surrogate,
        "eot_samples": plan.spec.eot_samples,
        "eval_batch_size": plan.batch_size or plan.spec.eval_batch_size,
        **Acceleration.of(plan.spec).params(),
        "n_eval": plan.n_eval,
        "seed": plan.spec.seed,
        "weights": plan.spec.weights,
    }
    params.update({f"training.{k}": v for k, v in vars(plan.spec.training).items()})
    params.update({f"dataset.{k}": v for k, v in plan.dataset.settings_dict().items()})
    params.update({f"model.{k}": v for k, v in plan.models[cell.model].settings_dict().items()})
    params.update({f"attack.{k}": v for k, v in plan.attacks[cell.attack].settings_dict().items()})
    chain = plan.defenses[cell.defense]
    for defense in chain:
        prefix = "defense." if len(chain) == 1 else f"defense.{defense.name}."
        params.update({f"{prefix}{k}": v for k, v in defense.settings_dict().items()})
    return params


# --------------------------------------------------------------------------- running


def check_adversarial(cell: Cell, x: torch.Tensor, x_adv: torch.Tensor) -> None:
    """Raise :class:`CellError` if an attack's output leaves [0, 1] or its budget.

    The budget bounds a norm only under the threat models ``linf`` and ``l2``; ``l2-minimal``
    attacks (budget: a margin), ``noise`` and ``frequency`` are checked for range only.
    """
    if x_adv.shape != x.shape:
        raise CellError(
            f"attack {cell.attack!r} returned shape {tuple(x_adv.shape)}, expected {tuple(x.shape)}"
        )
    if not torch.isfinite(x_adv).all():
        raise CellError(f"attack {cell.attack!r} returned NaN or infinite values")
    low, high = float(x_adv.min()), float(x_adv.max())
    if low < -RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
        raise CellError(f"attack {cell.attack!r} left the valid range [0, 1]: min {low:.6g}, max {high:.6g}")
    delta = (x_adv - x).flatten(1)
    if cell.threat_model == "linf":
        linf = float(delta.abs().max()) if delta.numel() else 0.0
        if linf > cell.budget + LINF_TOLERANCE:
            raise CellError(
                f"attack {cell.attack!r} exceeded its budget: ||delta||_inf = {linf:.6g} > {cell.budget:.6g}"
            )
    elif cell.threat_model == "l2":
        l2 = float(delta.norm(dim=1).max()) if delta.numel() else 0.0
        if l2 > cell.budget + L2_TOLERANCE:
            raise CellError(
                f"attack {cell.attack!r} exceeded its budget: ||delta||_2 = {l2:.6g} > {cell.budget:.6g}"
            )


class MatrixRunner:
    """Runs a :class:`MatrixPlan`, logging to MLflow through a :class:`Tracker`."""

    def __init__(
        self,
        plan: MatrixPlan,
        host: PluginHost,
        tracker: Tracker,
        progress: ProgressSink,
        cache: ModelCache,
        rerun: bool = False,
        shard: tuple[int, int] | None = None,
    ) -> None:
        self.plan = plan
        self.host = host
        self.tracker = tracker
        self.progress = progress
        self.cache = cache
        self.rerun = rerun
        """Run every cell, also those already FINISHED in the store (``--rerun``)."""
        self.shard = shard
        """``(i, n)``: a worker of the devices executor, running the defended-model groups
        ``i, i + n, i + 2n, ...`` under an existing parent run, without the summary."""
        self.results: list[CellResult] = []
        self.reused: list[CellResult] = []
        """Cells found FINISHED in the store under the same ``medbench.cell_key`` (not run again)."""
        self.flags: list[Flag] = []
        """Sanity flags of the finished matrix (:mod:`medbench.sanity`)."""
        self._lpips: Any = None
        self._surrogate_estimator: Any = None

    def _resume(self) -> list[Cell]:
        """Close runs a killed process left RUNNING; return the cells still to run.

        Cells whose key has a FINISHED run in the experiment are taken from the store
        (unless ``rerun``), so that an interrupted matrix continues where it stopped.
        """
        closed = self.tracker.close_abandoned_runs(socket.gethostname(), _process_alive)
        if closed:
            self.progress.message(f"marked {closed} run(s) FAILED that a killed medbench run left RUNNING")
        cells = self.plan.cells
        if self.rerun:
            return list(cells)
        finished = self.tracker.finished_cells(c.key for c in cells)
        for cell in cells:
            run = finished.get(cell.key)
            if run is not None:
                cell.run_id = run.info.run_id
                self.reused.append(CellResult(cell, "FINISHED", dict(run.data.metrics)))
        if self.reused:
            self.progress.message(
                f"{len(self.reused)} of {len(cells)} cells already FINISHED in the store: "
                "kept (--rerun runs them again)"
            )
        done = {id(r.cell) for r in self.reused}
        return [c for c in cells if id(c) not in done]

    def start_parent_run(self) -> str:
        """Create the parent run as the coordinator of the devices or Ray executor, before its workers.

        Also turns on checkpoint sharing (:mod:`medbench.checkpoint_store`) and trains (or
        fetches) the ``--surrogate`` once, here, so that every worker downloads it instead of
        training it again. (``run`` creates the parent run itself when the plan has none.)
        """
        run_id = self._open_parent_run()
        self.share_checkpoints(distributed=True)
        try:
            self._prepare_surrogate()
        except BaseException:
            self.tracker.finish(run_id, "FAILED")
            raise
        return run_id

    def _open_parent_run(self) -> str:
        plan = self.plan
        plan.parent_run_id = self.tracker.start_run(
            name=f"{plan.spec.name}-{time.strftime('%Y%m%d-%H%M%S')}",
            params=self._parent_params(),
            tags=self._parent_tags(),
        )
        return plan.parent_run_id

    def share_checkpoints(self, distributed: bool) -> None:
        """Share trained models through the experiment's artifact store (devices and Ray executors).

        On for ``distributed`` processes, else off; ``MEDBENCH_SHARE_CHECKPOINTS`` decides when
        set. Nothing with ``--no-cache``.
        """
        from medbench.checkpoint_store import CheckpointStore, sharing_wanted

        if self.cache.enabled and self.cache.remote is None and sharing_wanted(distributed):
            self.cache.remote = CheckpointStore(self.tracker, notify=self.progress.message)

    def _prepare_surrogate(self) -> None:
        """Train (or fetch) the surrogate into the caches before the workers start (all need it)."""
        plan = self.plan
        if plan.surrogate is None or not self.cache.enabled:
            return
        if not self.rerun:
            finished = self.tracker.finished_cells(c.key for c in plan.cells)
            if all(c.key in finished for c in plan.cells):
                return
        surrogate = plan.surrogate
        self.progress.message(f"training the surrogate {surrogate.label} once for all workers")
        builder = self._builder(surrogate.model_name, surrogate.model, plan.spec.seed + 1, "surrogate ")
        builder.build(surrogate.chain)
        del builder
        if plan.device.type == "cuda":
            torch.cuda.empty_cache()  # leave this GPU's memory to the workers

    def groups(self) -> list[tuple[str, str]]:
        """The (model, defense) groups in the order the matrix runs them: one defended model each."""
        return [(model, defense) for model in self.plan.models for defense in self.plan.defenses]

    def _in_shard(self, cell: Cell) -> bool:
        if self.shard is None:
            return True
        index, count = self.shard
        return self.groups().index((cell.model, cell.defense)) % count == index

    def run(self) -> list[CellResult]:
        """Run the matrix's cells that the store does not hold yet, then log the summary.

        As a worker (``shard``), only this worker's groups run, under the plan's existing
        parent run, and the parent run is left open for the coordinating process.
        """
        plan = self.plan
        todo = [c for c in self._resume() if self._in_shard(c)]
        if plan.parent_run_id is None:
            self._open_parent_run()
            self.share_checkpoints(distributed=False)
        assert plan.parent_run_id is not None
        if self.shard is not None:
            self.share_checkpoints(distributed=True)
            self._run_cells(todo)
            return self.results
        status = "FAILED"
        try:
            self._hooks("before_matrix", matrix=plan)
            self._run_cells(todo)
            self.results = sorted(self.reused + self.results, key=lambda r: r.cell.index)
            self._hooks("after_matrix", matrix=plan, results=self.results)
            self._log_summary()
            status = "FINISHED" if all(r.status == "FINISHED" for r in self.results) else "FAILED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            self.tracker.finish(plan.parent_run_id, status)
        return self.results

    # ------------------------------------------------------------------ pieces

    def _run_cells(self, todo: list[Cell]) -> None:
        plan = self.plan
        self.progress.start_matrix(len(todo))
        if not todo:
            return
        batches = self._eval_batches()
        self._surrogate_estimator = self._build_surrogate()
        for model_name in plan.models:
            if not any(c.model == model_name for c in todo):
                continue
            builder = self._builder(model_name, plan.models[model_name], plan.spec.seed)
            evaluator = self._evaluator(model_name)
            for defense_name, chain in plan.defenses.items():
                group = [c for c in todo if c.model == model_name and c.defense == defense_name]
                if group:
                    self._run_group(builder, evaluator, chain, group, batches)

    def _evaluator(self, model_name: str, model: Model | None = None) -> TaskEvaluator:
        plan = self.plan
        roi = (model or plan.models[model_name]).roi_size()
        if plan.bundle.task == "classification":
            return ClassificationEvaluator(
                plan.bundle,
                plan.device,
                roi,
                plan.batch_size or CPU_EVAL_BATCH_SIZE,
                plan.spec.eot_samples,
                Acceleration.of(plan.spec),
            )
        if self._lpips is None:
            self._lpips = lpips_similarity(plan.device) if plan.dataset.dims == 3 else None
            if isinstance(self._lpips, str):
                self.progress.message(f"lpips_sim left out: {self._lpips}")
        return SegmentationEvaluator(
            plan.bundle,
            plan.device,
            roi,
            None if isinstance(self._lpips, str) else self._lpips,
            Acceleration.of(plan.spec),
        )

    def _eval_batches(self) -> list[Batch]:
        """The evaluation batches, at the spec's ``eval_batch_size`` or the size ``auto`` chooses.

        ``auto`` on a CPU is :data:`~medbench.acceleration.CPU_EVAL_BATCH_SIZE`; on a GPU the
        data go to the device first (one batch per run of equally shaped samples), then every
        model of the run is probed and the batches are split, as views, at the smallest size
        chosen. Sets :attr:`MatrixPlan.batch_size`.
        """
        plan = self.plan
        requested = plan.spec.eval_batch_size
        if requested != AUTO:
            plan.batch_size = int(requested)
            return eval_batches(plan.bundle, plan.n_eval, plan.batch_size, plan.device)
        if plan.device.type != "cuda":
            choice = BatchChoice(CPU_EVAL_BATCH_SIZE)
            batches = eval_batches(plan.bundle, plan.n_eval, choice.batch_size, plan.device)
        else:
            whole = eval_batches(plan.bundle, plan.n_eval, plan.n_eval, plan.device)
            try:
                choice = self._probe_batch_size()
            except Exception as error:  # a model that fails here fails its cells later, with details
                if out_of_memory(error):  # not even the probe's few samples fit
                    choice = BatchChoice(1, source="the memory probe ran out of memory")
                else:
                    choice = BatchChoice(
                        CPU_EVAL_BATCH_SIZE,
                        source=f"the memory probe failed ({_one_line(error)}); the default",
                    )
            finally:
                torch.cuda.empty_cache()
            batches = split_batches(whole, choice.batch_size)
        plan.batch_size = choice.batch_size
        self.progress.message(choice.describe())
        return batches

    def _probe_batch_size(self) -> BatchChoice:
        """``auto`` on a GPU: the per-sample memory of one loss gradient of every model of the run
        (and the surrogate), undefended and untrained, with the run's precision and layout;
        the largest power of two that fits the free memory for the hungriest of them."""
        plan = self.plan
        bundle = plan.bundle
        models = [(name, model) for name, model in plan.models.items()]
        if plan.surrogate is not None:
            models.append((plan.surrogate.model_name, plan.surrogate.model))
        acceleration = replace(Acceleration.of(plan.spec), compile=False)
        per_sample = 0.0
        for name, model in models:
            evaluator = self._evaluator(name, model)
            evaluator.acceleration = acceleration
            with torch.random.fork_rng(devices=[plan.device] if plan.device.type == "cuda" else []):
                module = model.build(bundle.task, bundle.in_channels, bundle.num_classes, None)
            defended = DefendedModel(module.to(plan.device), model.normalization(bundle.in_channels))
            estimator = evaluator.estimator(defended)
            shape = tuple(getattr(estimator, "input_shape", bundle.input_shape))
            with frozen_parameters(defended):
                measured = gradient_bytes_per_sample(
                    estimator,
                    plan.device,
                    shape,
                    bundle.task,
                    bundle.multilabel,
                    min(PROBE_BATCH_SIZE, plan.n_eval),
                )
            per_sample = max(per_sample, measured)
            del estimator, defended, module
        free = free_device_bytes(plan.device)
        return BatchChoice(choose_batch_size(per_sample, free, plan.n_eval), per_sample, free)

    def _build_surrogate(self) -> Any:
        """The estimator transfer attacks are crafted on, or None without ``--surrogate``."""
        surrogate = self.plan.surrogate
        if surrogate is None:
            return None
        self.progress.message(f"transfer attacks: crafting on the surrogate {surrogate.label}")
        builder = self._builder(surrogate.model_name, surrogate.model, self.plan.spec.seed + 1, "surrogate ")
        defended = builder.build(surrogate.chain)
        return self._evaluator(surrogate.model_name, surrogate.model).estimator(defended)

    def _builder(self, model_name: str, model: Model, seed: int, role: str = "") -> DefenseBuilder:
        plan = self.plan
        shown = f"{role}{model_name}"
        return DefenseBuilder(
            dataset=plan.bundle,
            model_name=model_name,
            model=model,
            weights=plan.spec.weights,
            standard=self.host.registries.defenses.get(STANDARD_DEFENSE).configured(
                plan.spec.plugin_settings("defense", STANDARD_DEFENSE)
            ),
            training=plan.spec.training,
            device=plan.device,
            seed=seed,
            cache=self.cache,
            plugin_versions=plan.plugin_versions,
            on_epoch=lambda label: (
                lambda epoch, epochs, loss, acc: self.progress.training(
                    f"{shown}/{label}", epoch, epochs, loss, acc
                )
            ),
            on_cache_hit=lambda label: self.progress.message(f"{shown}/{label}: trained weights from cache"),
            on_trained=lambda label, history: self.progress.trained(f"{shown}/{label}", history),
        )

    def _run_group(
        self,
        builder: DefenseBuilder,
        evaluator: TaskEvaluator,
        chain: list[Defense],
        cells: list[Cell],
        batches: list[Batch],
    ) -> None:
        try:
            defended = builder.build(chain)
            estimator = evaluator.estimator(defended)
            with frozen_parameters(defended):
                clean = evaluator.clean_outputs(estimator, batches)
            if not all(torch.isfinite(outputs.float()).all() for outputs in clean.outputs):
                raise CellError(
                    f"model {cells[0].model!r} with defense {cells[0].defense!r} "
                    "returned NaN or infinite logits on clean input"
                )
            self._check_output_shapes(clean, batches, cells[0])
        except (KeyboardInterrupt, UsageError):
            raise
        except (Exception, SystemExit) as error:  # plugin code calling sys.exit fails its cells only
            message = _one_line(error)
            details = traceback.format_exc()
            for cell in cells:
                self._fail_cell(cell, f"building the defended model failed: {message}", details)
            return
        with frozen_parameters(defended), tempfile.TemporaryDirectory() as directory:
            checks = self._group_checks(estimator, batches[0], cells[0])
            visuals = self._defense_images(chain, defended, batches[0][0], Path(directory))
            shared = self._shared_budgets(evaluator, estimator, cells, batches)
            for cell in cells:
                self._run_cell(
                    cell, evaluator, estimator, batches, clean, visuals, checks, shared.get(id(cell))
                )

    def _shared_budgets(
        self, evaluator: TaskEvaluator, estimator: Any, cells: list[Cell], batches: list[Batch]
    ) -> dict[int, tuple[list[AttackResult], float]]:
        """Adversarial batches of the attacks that share work across budgets (FGSM's one gradient).

        For every attack that overrides :meth:`~medbench.api.Attack.generate_budgets` and runs
        at several budgets here, its batches are crafted for all budgets at once, before the
        cells. Returns, per cell (by ``id``), its batches and its share of the crafting time.
        An attack whose shared crafting fails is left to its cells, which then fail (or not)
        one by one.
        """
        if not isinstance(evaluator, ClassificationEvaluator):
            return {}
        result: dict[int, tuple[list[AttackResult], float]] = {}
        source = estimator if self._surrogate_estimator is None else self._surrogate_estimator
        for name, attack in self.plan.attacks.items():
            mine = [c for c in cells if c.attack == name]
            if len(mine) < 2 or type(attack).generate_budgets is Attack.generate_budgets:
                continue
            started = time.perf_counter()
            per_cell: list[list[AttackResult]] = [[] for _ in mine]
            try:
                for number, (x, y) in enumerate(batches):
                    seeds = [cell_seed(self.plan, c) + number * 1009 for c in mine]
                    crafted = attack.generate_budgets(source, x, y, [c.budget for c in mine], seeds=seeds)
                    for results, item in zip(per_cell, crafted, strict=True):
                        results.append(as_attack_result(item))
            except Exception as error:
                self.progress.message(f"{name}: crafting all budgets at once failed ({_one_line(error)})")
                continue
            if self.plan.device.type == "cuda":
                torch.cuda.synchronize(self.plan.device)
            share = (time.perf_counter() - started) / len(mine)
            for cell, results in zip(mine, per_cell, strict=True):
                result[id(cell)] = (results, share)
        return result

    def _group_checks(self, estimator: Any, batch: Batch, cell: Cell) -> dict[str, float]:
        """:func:`~medbench.gradient_checks.group_checks` of one defended model; never fails a cell."""
        plan = self.plan
        try:
            return group_checks(
                estimator,
                *batch,
                task=plan.bundle.task,
                multilabel=plan.bundle.multilabel,
            )
        except Exception as error:
            self.progress.message(f"{cell.model}/{cell.defense}: gradient checks skipped: {_one_line(error)}")
            return {}

    def _defense_images(
        self, chain: list[Defense], defended: DefendedModel, x: torch.Tensor, directory: Path
    ) -> list[Path]:
        """PNG files of what the defense's :meth:`~medbench.api.Defense.visualize` returns.

        A failure here is reported and skipped: pictures never fail a cell.
        """
        if not chain:
            return []
        try:
            with torch.no_grad():
                visuals = chain[0].visualize(defended, x[:8])
            return [image_rows(rows, directory / f"{name}.png") for name, rows in visuals.items()]
        except Exception as error:
            self.progress.message(f"defense {chain[0].name!r} could not draw its images: {_one_line(error)}")
            return []

    def _run_cell(
        self,
        cell: Cell,
        evaluator: TaskEvaluator,
        estimator: Any,
        batches: list[Batch],
        clean: CleanOutputs,
        defense_images: list[Path],
        checks: dict[str, float],
        shared: tuple[list[AttackResult], float] | None = None,
    ) -> None:
        plan = self.plan
        attack = plan.attacks[cell.attack]
        cell.run_id = self.tracker.start_run(
            cell.label, cell_params(plan, cell), self._cell_tags(cell), plan.parent_run_id
        )
        self._hooks("before_cell", cell=cell)
        self.progress.start_cell(cell, len(batches))
        try:
            seed = cell_seed(plan, cell)
            started = time.perf_counter()
            adversarial, attacked = [], []
            totals: dict[str, float] = {}
            for number, (x, y) in enumerate(batches):
                source = estimator if self._surrogate_estimator is None else self._surrogate_estimator
                crafted = (
                    shared[0][number]
                    if shared is not None
                    # copies: an attack that perturbs its input in place must not change the
                    # clean batch that later cells and the metrics read
                    else craft_splitting_on_oom(
                        evaluator,
                        attack,
                        source,
                        x.clone(),
                        y.clone(),
                        cell.budget,
                        seed + number * 1009,
                        on_split=functools.partial(self._report_split, cell.label),
                    )
                )
                add_totals(totals, crafted.totals)
                x_adv = crafted.x_adv
                check_adversarial(cell, x, x_adv)
                adversarial.append(x_adv.detach())
                outputs = evaluator.adversarial_outputs(estimator, adversarial[-1])
                if not torch.isfinite(outputs.float()).all():
                    raise CellError("the model returned NaN or infinite logits on the adversarial inputs")
                attacked.append(outputs)
                self.progress.advance_cell()
            if plan.device.type == "cuda":
                torch.cuda.synchronize(plan.device)
            seconds = time.perf_counter() - started + (shared[1] if shared is not None else 0.0)
            metrics = evaluator.metrics(batches, adversarial, clean, attacked)
            metrics["seconds"] = seconds
            samples = sum(len(x) for x, _ in batches)
            metrics.update({f"{name}_mean": total / samples for name, total in totals.items()})
            metrics.update(self._plugin_metrics(cell, batches, adversarial, clean.outputs, attacked))
            metrics.update(checks)
            self.tracker.log_metrics(cell.run_id, metrics)
            with tempfile.TemporaryDirectory() as directory:
                grid = evaluator.examples(
                    batches[0],
                    adversarial[0],
                    clean.outputs[0],
                    attacked[0],
                    Path(directory) / "examples.png",
                )
                self.tracker.log_artifact(cell.run_id, grid)
            for image in defense_images:
                self.tracker.log_artifact(cell.run_id, image, "defense")
            self.tracker.finish(cell.run_id, "FINISHED")
            result = CellResult(cell, "FINISHED", metrics)
        except KeyboardInterrupt:
            self.tracker.finish(cell.run_id, "KILLED")
            raise
        except (Exception, SystemExit) as error:  # plugin code calling sys.exit fails its cell only
            self.tracker.fail(cell.run_id, _one_line(error), traceback.format_exc())
            result = CellResult(cell, "FAILED", error=_one_line(error))
        self._record(result)

    def _check_output_shapes(self, clean: CleanOutputs, batches: list[Batch], cell: Cell) -> None:
        """Refuse a model whose outputs are not one score per class (a label per voxel for segmentation)."""
        bundle = self.plan.bundle
        for outputs, (x, _) in zip(clean.outputs, batches, strict=True):
            if bundle.task == "classification":
                expected: tuple[int, ...] = (len(x), bundle.num_classes)
                shape_ok = tuple(outputs.shape) == expected or (
                    bundle.num_classes == 2 and not bundle.multilabel and tuple(outputs.shape) == (len(x), 1)
                )
            else:  # segmentation predictions are label maps (N, *spatial)
                expected = (len(x), *x.shape[2:])
                shape_ok = tuple(outputs.shape) == expected
            if not shape_ok:
                raise CellError(
                    f"model {cell.model!r} with defense {cell.defense!r} returned outputs of shape "
                    f"{tuple(outputs.shape)}; expected {expected}"
                )

    def _report_split(self, label: str, size: int) -> None:
        self.progress.message(f"{label}: out of device memory on a batch of {size}; attacking it in halves")

    def _plugin_metrics(
        self,
        cell: Cell,
        batches: list[Batch],
        adversarial: list[torch.Tensor],
        clean: list[torch.Tensor],
        attacked: list[torch.Tensor],
    ) -> dict[str, float]:
        if not self.plan.metrics:
            return {}
        if len({x.shape[1:] for x, _ in batches}) > 1:
            self.progress.message("metric plugins skipped: the evaluation samples differ in size")
            return {}
        outputs = CellOutputs(
            x_clean=torch.cat([x for x, _ in batches]).cpu(),
            x_adv=torch.cat(adversarial).cpu(),
            labels=torch.cat([y for _, y in batches]).cpu(),
            clean_logits=torch.cat(clean).cpu(),
            adv_logits=torch.cat(attacked).cpu(),
            budget=cell.budget,
            budget_name=cell.budget_name,
            task=self.plan.bundle.task,
        )
        return {metric.name: float(metric.compute(outputs)) for metric in self.plan.metrics}

    def _fail_cell(self, cell: Cell, error: str, details: str) -> None:
        cell.run_id = self.tracker.start_run(
            cell.label, cell_params(self.plan, cell), self._cell_tags(cell), self.plan.parent_run_id
        )
        self.progress.start_cell(cell, 1)
        self.tracker.fail(cell.run_id, error, details)
        self._record(CellResult(cell, "FAILED", error=error))

    def _record(self, result: CellResult) -> None:
        self.results.append(result)
        self.progress.end_cell(result)
        self._hooks("after_cell", cell=result.cell, result=result)

    def _hooks(self, name: str, **kwargs: Any) -> None:
        for problem in self.host.call(name, **kwargs):
            self.progress.message(f"warning: {problem}")

    def _parent_params(self) -> dict[str, Any]:
        plan = self.plan
        params: dict[str, Any] = {
            "suite": plan.spec.name,
            "dataset": plan.dataset.name,
            "data_dir": plan.spec.data_dir,
            "models": ",".join(plan.models),
            "defenses": ",".join(plan.defenses),
            "attacks": ",".join(plan.attacks),
            "n_eval": plan.n_eval,
            "seed": plan.spec.seed,
            "device": str(plan.device),
            "weights": plan.spec.weights,
            "eval_batch_size": plan.spec.eval_batch_size,
            **Acceleration.of(plan.spec).params(),
        }
        # by plugin name: MLflow keys cannot hold a variant's brackets, and the variants of one
        # attack share its budgets (they are resolved by plugin and budget name)
        params.update({f"budgets.{plan.attacks[name].name}": plan.budget_text(name) for name in plan.budgets})
        params.update({f"training.{k}": v for k, v in vars(plan.spec.training).items()})
        return params

    def _common_tags(self) -> dict[str, str]:
        plan = self.plan
        return {
            "medbench.version": __version__,
            "medbench.suite": plan.spec.name,
            "medbench.dataset_fingerprint": plan.bundle.fingerprint,
            "medbench.plugins": ",".join(f"{n}=={v}" for n, v in sorted(plan.plugin_versions.items())),
            "medbench.accelerator": accelerator_name(plan.device),
            "medbench.host": socket.gethostname(),
            "medbench.pid": str(os.getpid()),
        }

    def _parent_tags(self) -> dict[str, str]:
        return {
            **self._common_tags(),
            "medbench.role": "matrix",
            "medbench.spec_source": self.plan.spec.source,
        }

    def _cell_tags(self, cell: Cell) -> dict[str, str]:
        return {
            **self._common_tags(),
            "medbench.role": "cell",
            "medbench.cell_key": cell.key,
            "medbench.threat": cell.threat,
            **({"medbench.worker": f"{self.shard[0] + 1}/{self.shard[1]}"} if self.shard else {}),
        }

    def _log_summary(self) -> None:
        import json

        from medbench.report import results_document

        plan = self.plan
        assert plan.parent_run_id is not None
        document = results_document(plan.experiment, plan.parent_run_id, plan.dataset.name, self.results)
        self.tracker.log_text(plan.parent_run_id, json.dumps(document, indent=2), "results.json")
        finished = [r for r in self.results if r.status == "FINISHED"]
        summary: dict[str, float] = {
            "cells_finished": float(len(finished)),
            "cells_failed": float(len(self.results) - len(finished)),
        }
        self.tracker.log_metrics(plan.parent_run_id, summary)
        self._log_board()

    def _log_board(self) -> None:
        """Sanity flags (``sanity.json``, tags ``medbench.needs_adaptive_evaluation`` and
        ``medbench.at_chance``) and the robustness curves (``robustness_curves.png``/``.svg``)
        of this run's cells, read back from MLflow as the leaderboard reads them. Never fails
        the matrix."""
        import json

        from medbench.leaderboard.curves import plot_robustness_curves
        from medbench.leaderboard.records import latest_cells, load_records
        from medbench.sanity import check_cells, primary_metric

        plan = self.plan
        assert plan.parent_run_id is not None
        try:
            cells, _ = load_records(self.tracker.tracking_uri, plan.experiment)
            run_ids = {r.cell.run_id for r in self.results}
            mine = latest_cells([c for c in cells if c.run_id in run_ids])
            if not mine:
                return
            # the suite's ranking metric, as on its leaderboard, when its cells logged it
            metric = plan.spec.rank_by
            if metric is None or all(math.isnan(c.metric(f"robust_{metric}")) for c in mine):
                metric = primary_metric(mine)
            self.flags = check_cells(mine, metric)
            flags = [flag.as_dict() for flag in self.flags]
            self.tracker.log_text(plan.parent_run_id, json.dumps(flags, indent=2), "sanity.json")
            adaptive = sorted({f.row for f in self.flags if not f.of_model})
            at_chance = sorted({f.row for f in self.flags if f.of_model})
            self.tracker.set_tags(
                plan.parent_run_id,
                {
                    "medbench.needs_adaptive_evaluation": ",".join(adaptive),
                    "medbench.at_chance": ",".join(at_chance),
                },
            )
            with tempfile.TemporaryDirectory() as directory:
                title = f"{plan.spec.name} on {plan.dataset.name}"
                for path in plot_robustness_curves(
                    mine, f"robust_{metric}", Path(directory) / "robustness_curves.png", title
                ):
                    self.tracker.log_artifact(plan.parent_run_id, path)
        except Exception as error:
            self.progress.message(f"sanity checks and curves skipped: {_one_line(error)}")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def accelerator_name(device: torch.device) -> str:
    """``NVIDIA H200`` for a CUDA device, else the device type (``cpu``, ``mps``)."""
    if device.type == "cuda":
        return str(torch.cuda.get_device_name(device))
    return device.type


def _one_line(error: BaseException) -> str:
    """The first line of an error; prefixed with its type unless it is a CellError."""
    lines = str(error).strip().splitlines()
    first = lines[0] if lines else ""
    if isinstance(error, CellError) and first:
        return first
    return f"{type(error).__name__}: {first}" if first else type(error).__name__
