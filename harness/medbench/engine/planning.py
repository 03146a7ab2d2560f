"""Turning a spec into a validated plan, before anything trains or is recorded.

:func:`plan_matrix` resolves every name, setting and budget, loads the data, checks that
every model fits the data and that every defense can be built on every model, and returns
a :class:`~medbench.engine.cells.MatrixPlan`. Any problem is a :class:`UsageError` raised
here, so that bad input never leaves half-written runs or trains anything first.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medbench.api import Attack, Dataset, DatasetBundle, Defense, Model
from medbench.building.defending import (
    CHAIN_SEPARATOR,
    STANDARD_DEFENSE,
    check_chain,
    parse_variant,
    split_chain,
    variant_label,
)
from medbench.building.model_checks import check_buildable, check_model_fits, check_normalization
from medbench.building.model_identity import code_identity
from medbench.building.user_models import (
    canonical_name,
    file_identity,
    is_user_model,
    parse_normalization,
    resolve_user_model,
)
from medbench.config.budgets import Budget, RequestedBudget, UnitBudget, to_intensity_scale
from medbench.config.spec import RunSpec
from medbench.engine.cells import MatrixPlan, Surrogate, make_cells
from medbench.errors import UsageError, unknown_name_message
from medbench.plugins.host import PluginHost

Assignment = tuple[str, str, str, str]
"""``--set kind.name.key=value`` parsed: (kind, name, key, value)."""


def plan_matrix(
    spec: RunSpec,
    host: PluginHost,
    device: torch.device,
    *,
    eps_override: list[RequestedBudget] | None = None,
    budget_overrides: dict[str, list[RequestedBudget]] | None = None,
    assignments: Iterable[Assignment] = (),
    experiment: str | None = None,
    models: Mapping[str, Model] | None = None,
    dataset: Dataset | None = None,
) -> MatrixPlan:
    """Resolve every name, setting, budget and the data; raise :class:`UsageError` on bad input.

    Args:
        spec: The suite or spec; not changed (``assignments`` apply to a copy).
        host: The loaded plugins.
        device: Where the matrix runs.
        eps_override: ``--eps``: budgets of every attack on the intensity scale.
        budget_overrides: ``--budget NAME=...``, by attack or budget name.
        assignments: ``--set`` plugin settings.
        experiment: The MLflow experiment (default: the spec's name).
        models: Models that are not plugins (a user's module or factory), by the name the
            spec lists them under; they take precedence over plugins of that name.
        dataset: A dataset that is not a plugin (a user's tensors), used instead of
            ``spec.dataset``.

    Returns:
        The validated plan with its cells.
    """
    spec = _with_settings(spec, assignments)
    _check_settings_names(spec, host)
    dataset = dataset or _resolve_dataset(spec, host)
    task = dataset.task
    resolved_models = {name: _resolve_model(name, spec, host, dataset, models or {}) for name in spec.models}
    defenses = _resolve_defenses(spec, host, task)
    surrogate = _resolve_surrogate(spec, host, dataset) if spec.surrogate else None
    attacks: dict[str, Attack] = {}  # by label: ``pgd``, or a variant such as ``pgd[max_iter=50]``
    for element in spec.attacks:
        label, attack = _resolve_variant("attack", element, spec, host, task)
        attacks.setdefault(label, attack)  # one cell per label, however spelt
    requested = _requested_budgets(spec, host, attacks, eps_override, budget_overrides or {})
    _check_checkpoint_defenses(spec, resolved_models, defenses)

    bundle = load_dataset(dataset, spec.data_dir, spec.seed)
    n_eval = _n_eval(spec, dataset, bundle)
    built = _check_models(spec, resolved_models, defenses, bundle)
    plan = MatrixPlan(
        spec=spec,
        dataset=dataset,
        bundle=bundle,
        models=resolved_models,
        defenses=defenses,
        attacks=attacks,
        budgets=_convert_unit_budgets(requested, attacks, bundle, dataset.name),
        metrics=[m for m in host.registries.metrics if task in m.tasks],
        cells=[],
        device=device,
        n_eval=n_eval,
        experiment=experiment or spec.name,
        plugin_versions=_plugin_versions(host, dataset, resolved_models, defenses, attacks, surrogate),
        surrogate=surrogate,
        model_identities=_model_identities(spec, resolved_models, built),
    )
    plan.cells = make_cells(plan)
    return plan


def _with_settings(spec: RunSpec, assignments: Iterable[Assignment]) -> RunSpec:
    """A copy of ``spec`` with the ``--set`` assignments in its settings (the caller's spec stays as is)."""
    spec = copy.deepcopy(spec)
    spec.models = [canonical_name(name) for name in spec.models]
    for kind, name, key, value in assignments:
        spec.settings.setdefault(kind, {}).setdefault(name, {})[key] = value
    return spec


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


def _resolve_dataset(spec: RunSpec, host: PluginHost) -> Dataset:
    dataset: Dataset = host.registries.datasets.get(spec.dataset)
    return dataset.configured(spec.plugin_settings("dataset", spec.dataset))


def _resolve_defenses(spec: RunSpec, host: PluginHost, task: str) -> dict[str, list[Defense]]:
    if STANDARD_DEFENSE not in host.registries.defenses:
        raise UsageError(
            f"the standard-training defense {STANDARD_DEFENSE!r} is not registered "
            "(is the plugin 'art' disabled?)"
        )
    defenses: dict[str, list[Defense]] = {}
    for chain_name in spec.defenses:
        label, chain = _resolve_chain(chain_name, spec, host, task)
        if label in defenses:
            raise UsageError(f"defense {label!r} is listed twice")
        defenses[label] = chain
    return defenses


def _requested_budgets(
    spec: RunSpec,
    host: PluginHost,
    attacks: dict[str, Attack],
    eps_override: list[RequestedBudget] | None,
    budget_overrides: dict[str, list[RequestedBudget]],
) -> dict[str, list[RequestedBudget]]:
    """Each attack's budgets as requested; unknown budget names are errors."""
    registry = host.registries.attacks
    known = set(attacks) | {a.budget_name for a in attacks.values()}
    every = set(registry.names()) | {registry.get(n).budget_name for n in registry.names()}
    for name in spec.budgets:  # a suite may list budgets of attacks a run leaves out, not unknown ones
        if name not in every:
            raise UsageError(f"spec budgets: {unknown_name_message('attack or budget name', name, every)}")
    for name in budget_overrides:
        if name not in known:
            raise UsageError(f"--budget: {unknown_name_message('attack or budget name', name, known)}")
    return {
        name: _deduplicated(resolve_budgets(a, spec.budgets, eps_override, budget_overrides))
        for name, a in attacks.items()
    }


def _deduplicated(budgets: list[RequestedBudget]) -> list[RequestedBudget]:
    """The budgets in order, each once (``2/255,2/255`` is one cell, not two)."""
    unique: list[RequestedBudget] = []
    for budget in budgets:
        if budget not in unique:
            unique.append(budget)
    return unique


def resolve_budgets(
    attack: Attack,
    spec_budgets: dict[str, list[RequestedBudget]],
    eps_override: list[RequestedBudget] | None,
    budget_overrides: dict[str, list[RequestedBudget]],
) -> list[RequestedBudget]:
    """Budgets of one attack, by priority.

    ``--budget ATTACK=`` or ``--budget BUDGET_NAME=``, then ``--eps`` (attacks whose budget
    is on the intensity scale), then the spec's ``budgets`` by attack name, then by budget
    name, then the attack's own default grid.
    """
    if attack.name in budget_overrides:
        return budget_overrides[attack.name]
    if attack.budget_name in budget_overrides:
        return budget_overrides[attack.budget_name]
    if eps_override is not None and attack.budget_on_intensity_scale:
        return eps_override
    if attack.name in spec_budgets:
        return spec_budgets[attack.name]
    if attack.budget_name in spec_budgets:
        return spec_budgets[attack.budget_name]
    return list(attack.default_budgets)


def _convert_unit_budgets(
    requested: dict[str, list[RequestedBudget]],
    attacks: dict[str, Attack],
    bundle: DatasetBundle,
    dataset: str,
) -> dict[str, list[Budget]]:
    """Unit budgets (``5HU``) to the [0, 1] scale through the dataset's intensity window."""
    budgets: dict[str, list[Budget]] = {}
    for name, values in requested.items():
        attack = attacks[name]
        for value in values:
            if isinstance(value, UnitBudget) and not attack.budget_on_intensity_scale:
                raise UsageError(
                    f"budget {value.text}: {attack.budget_name} of attack {name!r} is not an intensity"
                )
            _check_intensity_scale(name, attack, value)
        budgets[name] = [
            Budget(
                to_intensity_scale(v, bundle.intensity_window, bundle.intensity_unit, dataset),
                v.text if isinstance(v, UnitBudget) else None,
            )
            for v in values
        ]
    return budgets


def _check_intensity_scale(name: str, attack: Attack, value: RequestedBudget) -> None:
    """An L∞ or noise budget on the [0, 1] scale cannot exceed 1: ``--eps 3`` means ``3/255``."""
    if isinstance(value, UnitBudget) or not attack.budget_on_intensity_scale or value <= 1:
        return
    if attack.threat_model in ("linf", "noise"):
        raise UsageError(
            f"budget {value:g} of attack {name!r} ({attack.budget_name}) is above 1 on the [0, 1] "
            f"intensity scale; did you mean {value:g}/255?"
        )


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


def _n_eval(spec: RunSpec, dataset: Dataset, bundle: DatasetBundle) -> int:
    test_size = len(bundle.test)  # type: ignore[arg-type]
    if test_size == 0:
        raise UsageError(f"dataset {dataset.name!r} has an empty test split")
    if spec.n_eval is not None and spec.n_eval > test_size:
        raise UsageError(f"--n-eval {spec.n_eval} is larger than the test split ({test_size} samples)")
    return spec.n_eval or test_size


def _resolve_model(
    name: str, spec: RunSpec, host: PluginHost, dataset: Dataset, given: Mapping[str, Model]
) -> Model:
    if name in given:
        model = given[name]
    elif is_user_model(name) and name not in host.registries.models:
        model = resolve_user_model(name, spec.normalization, dataset.task, dataset.dims)
    else:
        model = host.registries.models.get(name).configured(spec.plugin_settings("model", name))
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
    model = _resolve_model(model_name, spec, host, dataset, {})
    if dataset.task != "classification":
        raise UsageError("--surrogate: transfer attacks are implemented for classification datasets only")
    label, chain = _resolve_chain(chain_name, spec, host, dataset.task)
    return Surrogate(model_name, model, label, chain)


def _check_checkpoint_defenses(
    spec: RunSpec, models: dict[str, Model], defenses: dict[str, list[Defense]]
) -> None:
    """A trained model (``--checkpoint``, or a module object) is evaluated as it is: no training
    defense may retrain it, unless the defense declares that it fine-tunes from a checkpoint."""
    trained = [name for name, model in models.items() if spec.checkpoint or getattr(model, "trained", False)]
    if not trained:
        return
    for label, chain in defenses.items():
        training = chain[-1]
        if training.name == STANDARD_DEFENSE or training.kind != "training" or not training.trainable:
            continue
        if not training.fine_tunes_checkpoint:
            source = (
                f"--checkpoint {spec.checkpoint}" if spec.checkpoint else f"the trained model {trained[0]!r}"
            )
            raise UsageError(
                f"defense {label!r} trains a model, but {source} is evaluated as it is; "
                "evaluate it with --defense none or a preprocessing defense, "
                "or give --weights to train from it"
            )


def _plugin_versions(
    host: PluginHost,
    dataset: Dataset,
    models: dict[str, Model],
    defenses: dict[str, list[Defense]],
    attacks: dict[str, Attack],
    surrogate: Surrogate | None,
) -> dict[str, str]:
    """``name: version`` of every plugin the plan involves (part of the model-cache key)."""
    registries = host.registries
    owners = {registries.datasets.owner(dataset.name)} if dataset.name in registries.datasets else set()
    owners |= {registries.models.owner(n) for n in models if n in registries.models}
    owners |= {registries.defenses.owner(d.name) for chain in defenses.values() for d in chain}
    owners |= {registries.defenses.owner(STANDARD_DEFENSE)}
    if surrogate is not None:
        owners |= {registries.models.owner(surrogate.model_name)}
        owners |= {registries.defenses.owner(d.name) for d in surrogate.chain}
    owners |= {registries.attacks.owner(a.name) for a in attacks.values()}
    return {info.name: info.version for info in host.infos if info.name in owners}


def _check_models(
    spec: RunSpec, models: dict[str, Model], defenses: dict[str, list[Defense]], bundle: DatasetBundle
) -> dict[str, nn.Module]:
    """Every model fits the data and every defense its model; returns the user models built."""
    built: dict[str, nn.Module] = {}
    for name, model in models.items():
        check_normalization(name, model, bundle, parse_normalization(spec.normalization))
        module = check_model_fits(name, model, bundle, spec.weights, spec.checkpoint)
        if module is not None:
            built[name] = module
        trains = spec.training.epochs > 0 and not (spec.checkpoint or getattr(model, "trained", False))
        if trains and len(bundle.train) == 0:  # type: ignore[arg-type]
            raise UsageError(
                f"model {name!r} is trained before it is attacked, but the data has no training split: "
                "give a trained model (a module object, or --checkpoint) or training data (train_data=)"
            )
        for label, chain in defenses.items():
            check_buildable(name, model, label, chain, bundle, spec.weights)
    return built


def _model_identities(spec: RunSpec, models: dict[str, Model], built: dict[str, nn.Module]) -> dict[str, Any]:
    """Per model, the contents that define it beyond its name and settings (cell-key part): for a
    factory, also the code of what it builds (an imported architecture file may change)."""
    identities: dict[str, Any] = {}
    for name, model in models.items():
        identity: dict[str, Any] = dict(getattr(model, "identity", {}) or {})
        if name in built and not getattr(model, "trained", False):
            identity["built_code_sha256"] = code_identity(built[name])
        weights = file_identity(spec.weights)
        if weights:
            identity["weights"] = weights
        checkpoint = file_identity(spec.checkpoint)
        if checkpoint:
            identity["checkpoint"] = checkpoint
        if spec.normalization is not None:
            identity["normalization"] = spec.normalization
        if identity:
            identities[name] = identity
    return identities
