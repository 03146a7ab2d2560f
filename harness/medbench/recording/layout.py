"""The MLflow layout (DESIGN.md §6): every param, tag and artifact name in one place.

The writer (:mod:`medbench.engine.runner`) and the readers (:mod:`medbench.leaderboard`,
:func:`medbench.load_results`) share these names, so that a renamed tag cannot silently
break a board. One **parent run** per matrix (role ``matrix``), one nested run per cell
(role ``cell``).
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any

from medbench import __version__
from medbench.config.budgets import format_budget
from medbench.recording.environment import environment_tags

if TYPE_CHECKING:  # the names above stay importable without torch or the engine
    import torch

    from medbench.engine.cells import Cell, MatrixPlan

# tags
TAG_VERSION = "medbench.version"
TAG_SUITE = "medbench.suite"
TAG_FINGERPRINT = "medbench.dataset_fingerprint"
TAG_PLUGINS = "medbench.plugins"
TAG_ACCELERATOR = "medbench.accelerator"
TAG_HOST = "medbench.host"
TAG_PID = "medbench.pid"
TAG_ROLE = "medbench.role"
TAG_SPEC_SOURCE = "medbench.spec_source"
TAG_CELL_KEY = "medbench.cell_key"
TAG_THREAT = "medbench.threat"
TAG_WORKER = "medbench.worker"
TAG_ERROR = "medbench.error"
TAG_NEEDS_ADAPTIVE = "medbench.needs_adaptive_evaluation"
TAG_AT_CHANCE = "medbench.at_chance"
ROLE_MATRIX = "matrix"
ROLE_CELL = "cell"

# artifacts
ARTIFACT_RESULTS = "results.json"
ARTIFACT_SANITY = "sanity.json"
ARTIFACT_CURVES = "robustness_curves.png"
ARTIFACT_EXAMPLES = "examples.png"
ARTIFACT_PER_SAMPLE = "per_sample.npz"
"""A cell's per-sample outcomes (:mod:`medbench.measuring.per_sample`)."""
ARTIFACT_DEFENSE_DIR = "defense"

# parent-run metrics
METRIC_CELLS_FINISHED = "cells_finished"
METRIC_CELLS_FAILED = "cells_failed"


def accelerator_name(device: torch.device) -> str:
    """``NVIDIA H200`` for a CUDA device, else the device type (``cpu``, ``mps``)."""
    if device.type == "cuda":
        import torch

        return str(torch.cuda.get_device_name(device))
    return device.type


def cell_params(plan: MatrixPlan, cell: Cell) -> dict[str, Any]:
    """MLflow params of a cell (DESIGN.md §6)."""
    from medbench.wrapping.acceleration import Acceleration

    spec = plan.spec
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
        "eot_samples": spec.eot_samples,
        "eval_batch_size": plan.batch_size or spec.eval_batch_size,
        **Acceleration.of(spec).params(),
        "n_eval": plan.n_eval,
        "seed": spec.seed,
        "weights": spec.weights,
        **_model_source_params(plan, cell.model),
    }
    params.update({f"training.{k}": v for k, v in vars(spec.training).items()})
    params.update({f"dataset.{k}": v for k, v in plan.dataset.settings_dict().items()})
    params.update({f"model.{k}": v for k, v in plan.models[cell.model].settings_dict().items()})
    params.update({f"attack.{k}": v for k, v in plan.attacks[cell.attack].settings_dict().items()})
    chain = plan.defenses[cell.defense]
    for defense in chain:
        prefix = "defense." if len(chain) == 1 else f"defense.{defense.name}."
        params.update({f"{prefix}{k}": v for k, v in defense.settings_dict().items()})
    return params


def _model_source_params(plan: MatrixPlan, model: str) -> dict[str, Any]:
    """The checkpoint, normalisation and content hashes of a model, when it has them (else nothing,
    so that the params of plugin models without files stay as they were)."""
    spec = plan.spec
    params: dict[str, Any] = {}
    if spec.checkpoint is not None:
        params["checkpoint"] = spec.checkpoint
    if spec.normalization is not None:
        params["normalization"] = spec.normalization
    for key, value in sorted(plan.model_identities.get(model, {}).items()):
        if isinstance(value, dict):
            params.update({f"model_identity.{key}.{k}": v for k, v in sorted(value.items())})
        else:
            params[f"model_identity.{key}"] = value
    return params


def parent_params(plan: MatrixPlan) -> dict[str, Any]:
    """MLflow params of the parent run."""
    from medbench.wrapping.acceleration import Acceleration

    spec = plan.spec
    params: dict[str, Any] = {
        "suite": spec.name,
        "dataset": plan.dataset.name,
        "data_dir": spec.data_dir,
        "models": ",".join(plan.models),
        "defenses": ",".join(plan.defenses),
        "attacks": ",".join(plan.attacks),
        "n_eval": plan.n_eval,
        "seed": spec.seed,
        "device": str(plan.device),
        "weights": spec.weights,
        **({"checkpoint": spec.checkpoint} if spec.checkpoint is not None else {}),
        **({"normalization": spec.normalization} if spec.normalization is not None else {}),
        "eval_batch_size": spec.eval_batch_size,
        **Acceleration.of(spec).params(),
    }
    # by plugin name: MLflow keys cannot hold a variant's brackets, and the variants of one
    # attack share its budgets (they are resolved by plugin and budget name)
    params.update({f"budgets.{plan.attacks[name].name}": plan.budget_text(name) for name in plan.budgets})
    params.update({f"training.{k}": v for k, v in vars(spec.training).items()})
    return params


def common_tags(plan: MatrixPlan) -> dict[str, str]:
    """Tags of the parent run and of every cell."""
    return {
        TAG_VERSION: __version__,
        TAG_SUITE: plan.spec.name,
        TAG_FINGERPRINT: plan.bundle.fingerprint,
        TAG_PLUGINS: ",".join(f"{n}=={v}" for n, v in sorted(plan.plugin_versions.items())),
        TAG_ACCELERATOR: accelerator_name(plan.device),
        TAG_HOST: socket.gethostname(),
        TAG_PID: str(os.getpid()),
        **environment_tags(),
    }


def parent_tags(plan: MatrixPlan) -> dict[str, str]:
    """Tags of the parent run."""
    return {**common_tags(plan), TAG_ROLE: ROLE_MATRIX, TAG_SPEC_SOURCE: plan.spec.source}


def cell_tags(plan: MatrixPlan, cell: Cell, shard: tuple[int, int] | None) -> dict[str, str]:
    """Tags of a cell's run (``shard``: the devices executor's worker ``(i, n)``)."""
    return {
        **common_tags(plan),
        TAG_ROLE: ROLE_CELL,
        TAG_CELL_KEY: cell.key,
        TAG_THREAT: cell.threat,
        **({TAG_WORKER: f"{shard[0] + 1}/{shard[1]}"} if shard else {}),
    }
