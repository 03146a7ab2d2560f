"""The evaluation batches of a matrix and their size (``eval_batch_size``, or ``auto``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch

from medbench.api import DefendedModel, Model
from medbench.attacking.evaluation import Batch, TaskEvaluator, eval_batches
from medbench.config.spec import AUTO
from medbench.engine.cells import MatrixPlan
from medbench.errors import first_line
from medbench.wrapping.acceleration import (
    CPU_EVAL_BATCH_SIZE,
    PROBE_BATCH_SIZE,
    Acceleration,
    BatchChoice,
    choose_batch_size,
    free_device_bytes,
    out_of_memory,
    split_batches,
)
from medbench.wrapping.estimators import frozen_parameters, input_gradient

EvaluatorOf = Callable[[str, Model], TaskEvaluator]


def plan_batches(plan: MatrixPlan, evaluator_of: EvaluatorOf, notify: Callable[[str], None]) -> list[Batch]:
    """The evaluation batches, at the spec's ``eval_batch_size`` or the size ``auto`` chooses.

    ``auto`` on a CPU is :data:`~medbench.wrapping.acceleration.CPU_EVAL_BATCH_SIZE`; on a GPU
    the data go to the device first (one batch per run of equally shaped samples), then every
    model of the run is probed and the batches are split, as views, at the smallest size
    chosen. Sets :attr:`MatrixPlan.batch_size`.
    """
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
            choice = probe_batch_size(plan, evaluator_of)
        except Exception as error:  # a model that fails here fails its cells later, with details
            if out_of_memory(error):  # not even the probe's few samples fit
                choice = BatchChoice(1, source="the memory probe ran out of memory")
            else:
                choice = BatchChoice(
                    CPU_EVAL_BATCH_SIZE, source=f"the memory probe failed ({first_line(error)}); the default"
                )
        finally:
            torch.cuda.empty_cache()
        batches = split_batches(whole, choice.batch_size)
    plan.batch_size = choice.batch_size
    notify(choice.describe())
    return batches


def probe_batch_size(plan: MatrixPlan, evaluator_of: EvaluatorOf) -> BatchChoice:
    """``auto`` on a GPU: the per-sample memory of one loss gradient of every model of the run
    (and the surrogate), undefended and untrained, with the run's precision and layout; the
    largest power of two that fits the free memory for the hungriest of them."""
    bundle = plan.bundle
    models = list(plan.models.items())
    if plan.surrogate is not None:
        models.append((plan.surrogate.model_name, plan.surrogate.model))
    acceleration = replace(Acceleration.of(plan.spec), compile=False)
    per_sample = 0.0
    for name, model in models:
        evaluator = evaluator_of(name, model)
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


def probe_labels(estimator: Any, x: torch.Tensor, task: str, multilabel: bool) -> torch.Tensor:
    """Labels of the right form for a memory probe on ``x``: class indices, 0/1 rows, or class maps."""
    n = len(x)
    if task == "segmentation":
        return torch.zeros((n, *x.shape[2:]), dtype=torch.long, device=x.device)
    if multilabel:
        return torch.zeros((n, int(estimator.nb_classes)), dtype=torch.float32, device=x.device)
    return torch.zeros(n, dtype=torch.long, device=x.device)


def gradient_bytes_per_sample(
    estimator: Any,
    device: torch.device,
    input_shape: Sequence[int],
    task: str,
    multilabel: bool,
    batch: int = PROBE_BATCH_SIZE,
) -> float:
    """Peak CUDA memory growth of one loss-gradient call, per sample (on a random batch).

    One call on a single sample first, so that one-off allocations (cuBLAS and cuDNN
    handles and workspaces) are not counted per sample. Freeze the parameters meanwhile,
    as the attacks do, or their gradients are counted too.
    """
    generator = torch.Generator(device="cpu").manual_seed(0)
    x = torch.rand((batch, *input_shape), generator=generator).to(device)
    y = probe_labels(estimator, x, task, multilabel)
    input_gradient(estimator, x[:1], y[:1])
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    gradient = input_gradient(estimator, x, y)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    del gradient
    return max(peak - before, 0) / batch
