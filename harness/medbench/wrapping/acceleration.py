"""Run-level performance options: bf16 autocast, channels-last, ``torch.compile``, cuDNN
autotuning, and the automatic evaluation batch size (README, "Performance options").

The options change how the network computes, not what the benchmark measures:

* ``precision: bf16`` runs the network's forward pass (prediction and loss gradient) under
  ``torch.autocast`` with bfloat16. Its logits come back as float32, so the loss, the input
  gradient (float32, in the input's dtype), the preprocessing defences, the normalisation
  and the attacks' perturbation arithmetic all stay in float32.
* ``channels_last`` keeps the network's weights and its inputs in ``torch.channels_last``
  (``channels_last_3d`` for volumes); the input gradient comes back in the input's layout.
* ``compile`` wraps the network in ``torch.compile``. Compilation is checked once, when the
  estimator is built (one forward pass with and one without gradients); a failure is a
  one-line :class:`CompileError` naming the option.
* ``cudnn_benchmark`` sets ``torch.backends.cudnn.benchmark`` (not with ``--deterministic``).

They apply to attacks and evaluation; training (and so the model cache) stays float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from medbench.errors import UsageError, first_line

CPU_EVAL_BATCH_SIZE = 128
"""What ``auto`` chooses on a CPU: the fixed default of ``eval_batch_size`` (so ``auto`` gives
the same batches, and the same results, as before it existed). Host memory is not the limit
at the input sizes medbench runs on a CPU, and CPU throughput stops growing well below it."""
AUTO_MEMORY_FRACTION = 0.8
"""The share of the free device memory that ``auto`` fills (the rest: allocator
fragmentation, the attack's own copies of the batch, cuDNN workspaces)."""
PROBE_BATCH_SIZE = 8
"""Samples of the loss-gradient call that measures the memory per sample."""

BF16_TOLERANCE = 0.02
"""Documented tolerance: robust accuracy with ``precision: bf16`` is within this (absolute)
of float32's, FGSM and PGD on the test model (tests/harness/test_acceleration.py)."""
LAYOUT_TOLERANCE = 1e-6
"""Documented tolerance of channels-last, ``torch.compile`` and cuDNN autotuning: the same
robust accuracy as without them (they reorder float32 arithmetic, nothing more; a sample
exactly on a decision boundary could still flip, as with cuDNN's own nondeterminism)."""


class CompileError(UsageError):
    """``--compile`` was asked for and ``torch.compile`` failed on the model (exit code 2)."""


@dataclass(frozen=True)
class Acceleration:
    """The performance options of a run (spec keys of the same names)."""

    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    cudnn_benchmark: bool = False

    @classmethod
    def of(cls, spec: Any) -> Acceleration:
        """The options of a :class:`~medbench.config.spec.RunSpec`."""
        return cls(
            precision=spec.precision,
            channels_last=spec.channels_last,
            compile=spec.compile,
            cudnn_benchmark=spec.cudnn_benchmark,
        )

    @property
    def wraps_model(self) -> bool:
        """Whether the network needs :class:`AcceleratedModule` (cuDNN autotuning does not)."""
        return self.precision != "fp32" or self.channels_last or self.compile

    def params(self) -> dict[str, Any]:
        """MLflow params of the parent run and of every cell."""
        return {
            "precision": self.precision,
            "channels_last": self.channels_last,
            "compile": self.compile,
            "cudnn_benchmark": self.cudnn_benchmark,
        }


def configure_backends(acceleration: Acceleration, device: torch.device, deterministic: bool) -> None:
    """Check the options against each other and the device, then set cuDNN autotuning.

    Raises:
        UsageError: cuDNN autotuning with ``--deterministic`` (autotuning picks the fastest
            kernel per shape, timing-dependent, which is what deterministic mode forbids),
            or bf16 on a GPU without bfloat16 support.
    """
    if acceleration.cudnn_benchmark and deterministic:
        raise UsageError(
            "--cudnn-benchmark cannot be combined with --deterministic "
            "(autotuning picks kernels by timing); leave one of them out"
        )
    if acceleration.precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UsageError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no bfloat16 support")
    if acceleration.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True


# --------------------------------------------------------------------------- the wrapped network


def memory_format(ndim: int) -> torch.memory_format | None:
    """``channels_last`` for 4-D tensors, ``channels_last_3d`` for 5-D ones, else None."""
    return {4: torch.channels_last, 5: torch.channels_last_3d}.get(ndim)


class _ToMemoryFormat(torch.autograd.Function):
    """``x.contiguous(memory_format=...)`` whose gradient comes back in ``x``'s own layout."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, layout: torch.memory_format) -> torch.Tensor:
        ctx.was_contiguous = x.is_contiguous()
        return x.contiguous(memory_format=layout)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return (grad.contiguous() if ctx.was_contiguous else grad), None


def _as_float32(output: Any) -> Any:
    """Floating-point tensors (also inside tuples, lists and dicts) as float32."""
    if isinstance(output, torch.Tensor):
        return output.float() if output.is_floating_point() and output.dtype != torch.float32 else output
    if isinstance(output, tuple | list):
        return type(output)(_as_float32(item) for item in output)
    if isinstance(output, dict):
        return {key: _as_float32(item) for key, item in output.items()}
    return output


class AcceleratedModule(nn.Module):
    """The network with the run's options: autocast, memory format, ``torch.compile``.

    Wraps the module without changing it (its ``state_dict`` keys, the model cache), except
    that channels-last converts its weights' layout in place.

    Args:
        module: The network (normalised input to logits).
        acceleration: The options.
        device: Where the network runs (autocast's device type).
        spatial_dims: 2 (images) or 3 (volumes): which channels-last layout the weights get.
    """

    def __init__(
        self, module: nn.Module, acceleration: Acceleration, device: torch.device, spatial_dims: int = 2
    ) -> None:
        super().__init__()
        self.module = module
        self.acceleration = acceleration
        self.device_type = device.type
        if acceleration.channels_last:
            layout = memory_format(spatial_dims + 2)
            if layout is not None:
                module.to(memory_format=layout)
        # a plain attribute, so that the compiled module is not a second registered child
        self.__dict__["_compiled"] = torch.compile(module) if acceleration.compile else None

    def _autocast(self) -> AbstractContextManager[Any]:
        if self.acceleration.precision == "bf16":
            return torch.autocast(device_type=self.device_type, dtype=torch.bfloat16)
        return nullcontext()

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if self.acceleration.channels_last:
            layout = memory_format(x.ndim)
            if layout is not None:
                x = _ToMemoryFormat.apply(x, layout)
        with self._autocast():
            compiled = self.__dict__["_compiled"]
            if compiled is None:
                output = self.module(x, *args, **kwargs)
            else:
                try:
                    output = compiled(x, *args, **kwargs)
                except Exception as error:
                    if out_of_memory(error):
                        raise
                    # the network's own error, if it has one, surfaces here unchanged
                    self.module(x, *args, **kwargs)
                    raise CompileError(compile_failure(self.module, error)) from error
        return _as_float32(output) if self.acceleration.precision != "fp32" else output


def compile_failure(module: nn.Module, error: BaseException) -> str:
    """The one-line message of a failed ``torch.compile``."""
    return (
        f"--compile: torch.compile failed on the model ({type(module).__name__}): "
        f"{first_line(error)}; run without --compile"
    )


def accelerate(
    module: nn.Module,
    acceleration: Acceleration | None,
    device: torch.device,
    input_shape: Sequence[int],
) -> nn.Module:
    """``module`` with the run's options applied (``module`` itself when none applies).

    With ``compile``, the compiled network is checked on a random batch of ``input_shape``
    (one pass without gradients, one with the input gradient, as prediction and the attacks
    use it), so that an unusable ``torch.compile`` fails here, once, with a one-line
    :class:`CompileError`.
    """
    if acceleration is None or not acceleration.wraps_model:
        return module
    wrapped = AcceleratedModule(module, acceleration, device, spatial_dims=len(input_shape) - 1)
    if acceleration.compile:
        check_compiles(wrapped, input_shape, device)
    return wrapped


def check_compiles(wrapped: AcceleratedModule, input_shape: Sequence[int], device: torch.device) -> None:
    """Compile ``wrapped``'s network now: forward without and with an input gradient.

    The parameters are frozen meanwhile (as :func:`~medbench.wrapping.estimators.frozen_parameters`
    freezes them during attacks, so the compiled graphs are those the attacks reuse) and
    the batch dimension is marked dynamic, so that other batch sizes need no recompilation.
    """
    generator = torch.Generator(device="cpu").manual_seed(0)
    x = torch.rand((2, *input_shape), generator=generator).to(device)
    torch._dynamo.maybe_mark_dynamic(x, 0)
    parameters = list(wrapped.parameters())
    flags = [p.requires_grad for p in parameters]
    training = wrapped.training
    wrapped.eval()
    try:
        for parameter in parameters:
            parameter.requires_grad_(False)
        with torch.no_grad():
            wrapped(x)
        x_grad = x.clone().requires_grad_(True)
        output = wrapped(x_grad)
        first = output if isinstance(output, torch.Tensor) else next(iter(_tensors(output)))
        torch.autograd.grad(first.float().sum(), x_grad)
    except CompileError:
        raise
    except Exception as error:
        if out_of_memory(error):
            raise
        raise CompileError(compile_failure(wrapped.module, error)) from error
    finally:
        for parameter, flag in zip(parameters, flags, strict=True):
            parameter.requires_grad_(flag)
        wrapped.train(training)


def _tensors(output: Any) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    items = output.values() if isinstance(output, dict) else output
    return [tensor for item in items for tensor in _tensors(item)]


def out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` means the device ran out of memory."""
    return isinstance(error, torch.cuda.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower()
    )


# --------------------------------------------------------------------------- automatic batch size


def choose_batch_size(
    per_sample_bytes: float, free_bytes: float, n_samples: int, fraction: float = AUTO_MEMORY_FRACTION
) -> int:
    """The largest power of two whose batch fits in ``fraction`` of ``free_bytes``, at most
    ``n_samples`` (then exactly ``n_samples``: one batch holds them all), at least 1.

    A pure function of the measured memory per sample and the free memory.
    """
    n_samples = max(int(n_samples), 1)
    if not math.isfinite(per_sample_bytes) or per_sample_bytes <= 0:
        return n_samples
    fitting = int(max(free_bytes, 0) * fraction // per_sample_bytes)
    if fitting < 1:
        return 1
    return min(1 << (fitting.bit_length() - 1), n_samples)


@dataclass(frozen=True)
class BatchChoice:
    """What ``eval_batch_size: auto`` chose, and from what."""

    batch_size: int
    per_sample_bytes: float = math.nan
    free_bytes: float = math.nan
    source: str = "the fixed CPU default"
    """Where a size that was not measured came from."""

    def describe(self) -> str:
        if math.isnan(self.per_sample_bytes):
            return f"eval batch size {self.batch_size} (auto: {self.source})"
        return (
            f"eval batch size {self.batch_size} (auto: {self.per_sample_bytes / 2**20:.1f} MiB per sample, "
            f"{self.free_bytes / 2**30:.1f} GiB free, {AUTO_MEMORY_FRACTION:.0%} used at most)"
        )


def free_device_bytes(device: torch.device) -> float:
    """Free memory of a CUDA device, counting what torch's caching allocator holds unused."""
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return float(free + max(cached, 0))


def split_batches(
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]], size: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of at most ``size`` samples, as views of ``batches`` (no copy).

    Split from maximal runs of equally shaped samples, this gives exactly the batches that
    :func:`~medbench.attacking.evaluation.eval_batches` gives for ``size``.
    """
    result = []
    for x, y in batches:
        for start in range(0, len(x), size):
            result.append((x[start : start + size], y[start : start + size]))
    return result
