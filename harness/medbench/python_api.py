"""The Python API: :func:`evaluate` a model you already have, :func:`run` a suite or spec.

Both run the engine ``medbench run`` runs (:func:`medbench.engine.planning.plan_matrix`, then
:func:`medbench.engine.execute.run_matrix`): the same attacks and budget checks, metrics,
sanity checks, MLflow layout (a parent run and nested cells) and resume by cell key.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from medbench.api import Dataset, Normalization, Task
from medbench.building.cache import stable_hash
from medbench.building.model_identity import module_identity
from medbench.building.user_data import DataLike, as_tensors, in_memory_dataset, infer_task
from medbench.building.user_models import UserModel, parse_normalization
from medbench.config.budgets import RequestedBudget, parse_budget_list
from medbench.config.spec import RunSpec, TrainingSettings, load_spec_file, load_suite, spec_from_mapping
from medbench.errors import UsageError, first_line
from medbench.results import Results, results_of_runs

NormalizationLike = tuple[Sequence[float] | float, Sequence[float] | float] | Normalization | str | None
"""``(mean, std)`` per channel (or one value for all), a :class:`~medbench.api.Normalization`,
``"imagenet"`` / ``"none"``, or None: the model normalises its own [0, 1] input."""


class UserModelError(UsageError):
    """A model given to :func:`evaluate` that medbench cannot evaluate."""


def evaluate(
    model: nn.Module | Callable[..., nn.Module],
    data: DataLike | str,
    *,
    attacks: Sequence[str] = ("fgsm", "pgd"),
    eps: Sequence[float | str] | None = None,
    budgets: Mapping[str, Sequence[float | str]] | None = None,
    defenses: Sequence[str] = ("none",),
    normalization: NormalizationLike = None,
    task: Task | None = None,
    class_names: Sequence[str] | None = None,
    data_dir: str | Path | None = None,
    train_data: DataLike | None = None,
    n_eval: int | None = None,
    seed: int = 0,
    training: Mapping[str, Any] | None = None,
    settings: Mapping[str, Any] | None = None,
    name: str | None = None,
    experiment: str | None = None,
    tracking_uri: str | Literal[False] | None = None,
    device: str = "auto",
    rerun: bool = False,
    use_cache: bool = True,
    progress: bool = True,
) -> Results:
    """Attack a model you already have and measure it, as ``medbench run`` does.

    Args:
        model: An ``nn.Module`` returning logits (``(N, classes)``, or ``(N, classes, *spatial)``
            for segmentation), evaluated as it is; or a factory building one (called with the
            keyword arguments it names among ``task``, ``in_channels``, ``num_classes``) that
            training defenses train on ``train_data``.
        data: ``(x, y)`` tensors (images float in [0, 1], channels first; labels int class
            indices or label maps), a torch ``Dataset``/``DataLoader`` of ``(image, label)``,
            or a dataset plugin's name (with ``data_dir``), whose test split is evaluated.
        attacks, eps, budgets, defenses: As ``--attack``, ``--eps``, ``--budget`` (by attack or
            budget name) and ``--defense``; ``none`` evaluates the model as it is.
        normalization: What the model expects (:data:`NormalizationLike`); None: nothing.
        task, class_names: Inferred from the labels unless given.
        data_dir, train_data: A plugin dataset's folder; training data for a factory.
        n_eval, seed, training, settings: As ``--n-eval``, ``--seed``, the spec's ``training``
            and ``--set`` (``{"attack.pgd.max_iter": 20}``).
        name, experiment: The model's name on the board (default: its class name) and the
            MLflow experiment (default: ``<name>-on-<data>``).
        tracking_uri: The MLflow store (default: as ``medbench run``); ``False``: a temporary
            store that lives as long as the returned results.
        device, rerun, use_cache, progress: As ``--device``, ``--rerun``, not ``--no-cache``,
            and whether progress shows on stderr.

    Returns:
        The :class:`~medbench.results.Results` of the run's cells.

    Raises:
        UsageError: A subclass with the CLI's one-line message, for a model, data or option
            medbench cannot evaluate (nothing is recorded).
    """
    user_model = _user_model(model, name, normalization)
    dataset = _dataset(data, user_model, task, class_names, train_data)
    spec = _evaluation_spec(
        user_model.name, data, dataset, data_dir, _names(defenses), _names(attacks), n_eval, seed, training
    )
    spec.name = experiment or f"{spec.name}-{stable_hash({'model': user_model.identity}, length=6)}"
    return _run_spec(
        spec,
        eps=eps,
        budgets=budgets,
        settings=settings,
        tracking_uri=tracking_uri,
        device=device,
        rerun=rerun,
        use_cache=use_cache,
        progress=progress,
        models={user_model.name: user_model},
        dataset=None if isinstance(data, str) else dataset,
    )


def _names(names: Sequence[str] | str) -> list[str]:
    """A list of names; one name given as a string is that one name, not its letters."""
    return [names] if isinstance(names, str) else list(names)


def _evaluation_spec(
    label: str,
    data: DataLike | str,
    dataset: Dataset,
    data_dir: str | Path | None,
    defenses: Sequence[str],
    attacks: Sequence[str],
    n_eval: int | None,
    seed: int,
    training: Mapping[str, Any] | None,
) -> RunSpec:
    """The spec :func:`evaluate` runs: its model, data and matrix."""
    from medbench.config.settings import build_settings

    if n_eval is not None and (isinstance(n_eval, bool) or not isinstance(n_eval, int) or n_eval < 1):
        raise UsageError(f"n_eval must be a positive integer or None, got {n_eval!r}")
    dataset_name = data if isinstance(data, str) else dataset.name
    spec = RunSpec(
        name=f"{label}-on-{dataset_name}",
        dataset=dataset_name,
        data_dir=Path(data_dir) if data_dir is not None else None,
        models=[label],
        defenses=list(defenses),
        attacks=list(attacks),
        n_eval=n_eval,
        seed=seed,
        source="medbench.evaluate",
    )
    if training:
        spec.training = build_settings(TrainingSettings, dict(training), "training")
    return spec


def run(
    spec: RunSpec | str | Path | Mapping[str, Any] = "smoke",
    *,
    eps: Sequence[float | str] | None = None,
    budgets: Mapping[str, Sequence[float | str]] | None = None,
    settings: Mapping[str, Any] | None = None,
    experiment: str | None = None,
    tracking_uri: str | Literal[False] | None = None,
    device: str = "auto",
    rerun: bool = False,
    use_cache: bool = True,
    progress: bool = True,
) -> Results:
    """Run a suite or spec, as ``medbench run --suite``/``--spec`` does.

    Args:
        spec: A :class:`~medbench.config.spec.RunSpec`, a suite name or YAML path, or a
            mapping with a suite's keys.
        eps: As ``--eps``. budgets: As ``--budget``, by attack or budget name.
        settings: As ``--set``: ``{"attack.pgd.max_iter": 20}``.
        experiment: The MLflow experiment (default: the spec's name).
        tracking_uri: As for :func:`evaluate`.
        device: As for :func:`evaluate`. rerun: As ``--rerun``. use_cache: Not ``--no-cache``.
        progress: Show progress on stderr.

    Returns:
        The :class:`~medbench.results.Results` of the run's cells.
    """
    if isinstance(spec, Mapping):
        resolved = spec_from_mapping(dict(spec), "medbench.run")
    elif isinstance(spec, RunSpec):
        resolved = spec
    elif Path(spec).suffix in {".yaml", ".yml"} and Path(spec).is_file():
        resolved = load_spec_file(Path(spec))
    else:
        resolved = load_suite(str(spec))
    return _run_spec(
        resolved,
        eps=eps,
        budgets=budgets,
        settings=settings,
        experiment=experiment,
        tracking_uri=tracking_uri,
        device=device,
        rerun=rerun,
        use_cache=use_cache,
        progress=progress,
    )


def _run_spec(
    spec: RunSpec,
    *,
    eps: Sequence[float | str] | None,
    budgets: Mapping[str, Sequence[float | str]] | None,
    settings: Mapping[str, Any] | None,
    tracking_uri: str | Literal[False] | None,
    device: str,
    rerun: bool,
    use_cache: bool,
    progress: bool,
    experiment: str | None = None,
    models: Mapping[str, UserModel] | None = None,
    dataset: Dataset | None = None,
) -> Results:
    """Plan, run and read back: the one path of :func:`evaluate` and :func:`run`."""
    from medbench.config.spec import parse_assignment
    from medbench.engine.device import resolve_device
    from medbench.engine.execute import Execution, run_matrix
    from medbench.engine.planning import plan_matrix
    from medbench.plugins.host import load_plugins

    host = load_plugins()
    budget_overrides: dict[str, list[RequestedBudget]] = {
        str(k): parse_budget_list(v if isinstance(v, str) else list(v)) for k, v in (budgets or {}).items()
    }
    assignments = [parse_assignment(f"{key}={value}") for key, value in (settings or {}).items()]
    plan = plan_matrix(
        spec,
        host,
        resolve_device(device),
        eps_override=parse_budget_list(eps if isinstance(eps, str) else list(eps))
        if eps is not None
        else None,
        budget_overrides=budget_overrides,
        assignments=assignments,
        experiment=experiment,
        models=models,
        dataset=dataset,
    )
    with _store(tracking_uri, plan.experiment) as (uri, keep):
        execution = Execution(tracking_uri=uri, rerun=rerun, use_cache=use_cache)
        with _progress(progress) as sink:
            outcome = run_matrix(plan, host, execution, sink)
        return results_of_runs(
            uri,
            plan.experiment,
            (r.cell.run_id for r in outcome.results),
            parent_run_id=plan.parent_run_id,
            sanity=outcome.flags,
            suite=plan.spec.name,
            rank_by=plan.spec.rank_by,
            store=keep,
        )


@contextlib.contextmanager
def _store(tracking_uri: str | Literal[False] | None, experiment: str) -> Iterator[tuple[str, Any]]:
    """The store's URI, and for ``False`` the temporary folder that holds it."""
    from medbench.recording.tracking import resolve_tracking_uri

    if tracking_uri is False:  # its artifacts too go in the folder (not the default ./mlruns)
        from mlflow.tracking import MlflowClient

        from medbench.recording.tracking import quiet_mlflow

        quiet_mlflow()
        folder = tempfile.TemporaryDirectory(prefix="medbench-")
        uri = f"sqlite:///{folder.name}/mlflow.db"
        artifacts = (Path(folder.name) / "artifacts").as_uri()
        MlflowClient(tracking_uri=uri).create_experiment(experiment, artifact_location=artifacts)
        yield uri, folder
        return
    yield resolve_tracking_uri(tracking_uri), None


@contextlib.contextmanager
def _progress(show: bool) -> Iterator[Any]:
    from medbench.reporting.progress import QuietProgress, RichProgress

    if not show:
        yield QuietProgress()
        return
    from rich.console import Console

    sink = RichProgress(Console(stderr=True))
    with sink:
        yield sink


def _user_model(
    model: nn.Module | Callable[..., nn.Module], name: str | None, normalization: NormalizationLike
) -> UserModel:
    chosen = _normalization(normalization)
    if isinstance(model, torch.jit.ScriptModule):  # a scripted module has no deepcopy: reloaded per build
        buffer = io.BytesIO()
        torch.jit.save(model, buffer)
        data = buffer.getvalue()
        label = name or str(getattr(model, "original_name", "torchscript"))
        identity = {"torchscript_sha256": hashlib.sha256(data).hexdigest(), **_normalization_identity(chosen)}

        def load() -> nn.Module:
            return torch.jit.load(io.BytesIO(data), map_location="cpu")

        return UserModel(label, factory=load, normalization=chosen, dims=2, identity=identity, trained=True)
    if isinstance(model, nn.Module):
        label = name or type(model).__name__
        identity = {**module_identity(model), **_normalization_identity(chosen)}
        return UserModel(label, module=model, normalization=chosen, dims=2, identity=identity)
    if callable(model) and not isinstance(model, type | torch.Tensor):
        label = name or str(getattr(model, "__name__", "model"))
        user = UserModel(label, factory=model, normalization=chosen, dims=2)
        user.identity.update(_normalization_identity(chosen))
        return user
    raise UserModelError(
        f"model must be a torch.nn.Module or a function returning one, got {type(model).__name__}"
    )


def _normalization(normalization: NormalizationLike) -> Normalization | None:
    if normalization is None or isinstance(normalization, Normalization):
        return normalization
    if isinstance(normalization, str):
        return parse_normalization(normalization)
    try:
        mean, std = normalization
        means = tuple(float(v) for v in (mean if isinstance(mean, Sequence) else [mean]))
        stds = tuple(float(v) for v in (std if isinstance(std, Sequence) else [std]))
    except (TypeError, ValueError) as error:
        raise UsageError(f"normalization must be (mean, std), a name or None: {first_line(error)}") from None
    if len(means) != len(stds) or not all(s > 0 for s in stds):
        raise UsageError("normalization: mean and std need as many values, and std must be positive")
    return Normalization(means, stds)


def _normalization_identity(normalization: Normalization | None) -> dict[str, Any]:
    if normalization is None:
        return {}
    return {"normalization": [list(normalization.mean), list(normalization.std)]}


def _dataset(
    data: DataLike | str,
    model: UserModel,
    task: Task | None,
    class_names: Sequence[str] | None,
    train_data: DataLike | None,
) -> Dataset:
    """The dataset of ``data``: a plugin (by name, resolved by the planner) or the user's tensors."""
    if isinstance(data, str):
        from medbench.plugins.host import load_plugins

        if train_data is not None:
            raise UsageError("train_data goes with tensors, not with a dataset name (it has its own split)")
        found: Dataset = load_plugins().registries.datasets.get(data)
        model.dims = found.dims  # type: ignore[misc]
        return found
    x, y = as_tensors(data)
    inferred = infer_task(x, y) if len(x) else "classification"
    if task is not None and task != inferred:
        raise UsageError(
            f"task {task!r} does not fit labels of shape {tuple(y.shape)} (they look like {inferred})"
        )
    model.dims = x.ndim - 2  # type: ignore[misc]
    names = list(class_names) if class_names is not None else _class_names(y)
    return in_memory_dataset((x, y), class_names=names, task=inferred, train=train_data)


def _class_names(y: torch.Tensor) -> list[str]:
    """``0``, ``1``...: as many as the labels need (at least two)."""
    count = int(y.max()) + 1 if y.numel() else 2
    return [str(i) for i in range(max(count, 2))]
