"""Attack throughput: medbench's matrix path against a hand-written PyTorch loop, ART and torchattacks.

What is measured, in one process, on one model (a medbench model plugin built through the plugin
host, random init), one batch of random data (fixed seed) and one budget (L∞, ε = 8/255, PGD step
ε/4, ``--steps`` steps, one uniform random start; FGSM: one step of ε, no random start):

(a) ``medbench``: what a matrix cell does per batch (``MatrixRunner._run_cell`` →
    ``craft_splitting_on_oom`` → ``TaskEvaluator.craft``): the estimator from
    ``medbench.wrapping.estimators.classifier_estimator``, the parameters frozen with ``frozen_parameters``,
    the registered ``pgd`` / ``fgsm`` plugin's ``generate`` with whatever it does inside (both take
    ART's steps in torch from the estimator's ``loss_gradient``; PGD draws ART's NumPy random start
    once per batch);
(b) ``handwritten``: the same steps written directly in PyTorch (random start, sign step, clamp to
    [0, 1], projection; normalisation inside the forward; parameters frozen; ``no_grad`` for the
    updates): the limit medbench can reach. Its random start is drawn with torch on the device;
(c) ``art_default``: ART's own attack class on a plain ``PyTorchClassifier`` with ART's defaults
    (``preprocessing=(mean, std)``, parameters not frozen, NumPy in and out, ART's default batch
    size of 32; only ``verbose=False``); ``art_equal_batch``: the same with ``batch_size`` = the batch;
(d) ``torchattacks``: ``torchattacks.PGD`` / ``FGSM`` on the model with the normalisation in front,
    when torchattacks is importable (skipped otherwise).

Timing: every method is warmed up (``--warmup`` calls), then the methods are timed round-robin,
``--repeats`` rounds, the order rotating every round, so that the slow phases of a shared machine
fall on all of them (``torch.cuda.synchronize`` around every call on CUDA). Reported: median, min and
max wall seconds, median process CPU seconds, throughput in image-steps per second (batch × steps /
median seconds; FGSM is one step; ART's extra forward passes are not steps), and ratios of
throughputs: ``b/a`` (how far medbench is from the hand-written loop: 1.00 is as fast, 1.10 is 10%
slower), ``a/c``, ``a/c'`` and ``a/d`` (how much faster medbench is than ART's default and
torchattacks). FLOPs: one forward pass as counted by ``torch.utils.flop_counter.FlopCounterMode``
(convolutions and matrix products, a multiply-add being 2 FLOPs; normalisation, batch norm and
activations are not counted); an attack step counts as 3 forward passes (forward + backward), as
usual for training, although with frozen parameters the backward skips the weight gradients (about
2 forward passes are executed). TFLOP/s = 3 × forward FLOPs × steps / median seconds. Peak memory:
``torch.cuda.max_memory_allocated`` on CUDA; on the CPU the process's peak resident set size
(``resource.getrusage``, reset before every call through ``/proc/self/clear_refs`` on Linux; it
includes Python, torch and the model); the largest over a method's calls.

Also checked: (a) and (b) give the same adversarial examples when (b) starts from the random point
that medbench's PGD draws (ART draws it from NumPy's global generator, which medbench seeds).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import platform
import pstats
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

EPS = 8 / 255
STEP_RATIO = 0.25
SEED = 0
ART_DEFAULT_BATCH = 32
"""``batch_size`` default of ART's ``ProjectedGradientDescent`` and ``FastGradientMethod``."""
AGREEMENT_TOLERANCE = 1e-6
METHODS = ("medbench", "handwritten", "art_default", "art_equal_batch", "torchattacks")
LABELS = {
    "medbench": "(a) medbench matrix path",
    "handwritten": "(b) hand-written torch",
    "art_default": f"(c) ART default (batch {ART_DEFAULT_BATCH})",
    "art_equal_batch": "(c') ART default (equal batch)",
    "torchattacks": "(d) torchattacks",
}


@dataclass
class Timing:
    """The timed repetitions of one method and what they give."""

    method: str
    label: str
    times_s: list[float]
    median_s: float
    min_s: float
    max_s: float
    iqr_s: float
    cpu_median_s: float
    image_steps_per_s: float
    tflops: float
    peak_memory_mib: float


@dataclass
class AttackReport:
    """Everything measured for one attack."""

    attack: str
    steps: int
    eps: float
    eps_step: float
    rows: list[Timing] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    ratios: dict[str, float | None] = field(default_factory=dict)
    ratios_of_min: dict[str, float | None] = field(default_factory=dict)
    agreement: dict[str, Any] = field(default_factory=dict)
    profile: str = ""


# --------------------------------------------------------------------------- setup


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument("--model", default="resnet50", help="medbench model plugin (resnet50, resnet18, ...)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="PGD steps (FGSM always takes one)")
    parser.add_argument("--attack", nargs="+", choices=("pgd", "fgsm"), default=["pgd"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="cProfile (a): print top N")
    parser.add_argument("--json", type=Path, default=None, help="write the results as JSON")
    parser.add_argument(
        "--tiny", action="store_true", help="smallcnn at 32², batch 8, 2 steps, 1 repeat (seconds on a CPU)"
    )
    args = parser.parse_args(argv)
    if args.tiny:
        args.model, args.image_size, args.batch_size, args.steps, args.repeats = "smallcnn", 32, 8, 2, 1
    if min(args.image_size, args.batch_size, args.steps, args.repeats) < 1 or args.warmup < 0:
        parser.error("sizes, steps and repeats must be positive, warmup non-negative")
    return args


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    """Reset the CUDA peak, or on Linux the process's peak RSS (``/proc/self/clear_refs``)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory_mib(device: torch.device) -> float:
    """Peak CUDA memory allocated since the last reset, or the process's peak RSS on the CPU.

    The RSS peak (``resource.getrusage``) includes the interpreter, torch and the model; where
    ``/proc/self/clear_refs`` cannot reset it, it is the peak since the process started.
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def forward_flops(model: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward pass on ``x`` (FlopCounterMode: convolutions and matrix products)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x[:1])
    return int(counter.get_total_flops()) * x.shape[0]


@dataclass
class Setup:
    """The shared model, data and medbench objects."""

    device: torch.device
    defended: Any
    bundle: Any
    model: nn.Module
    mean: torch.Tensor
    std: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    host: Any
    flops_forward: int


def build_setup(args: argparse.Namespace) -> Setup:
    from medbench.api import DatasetBundle, DefendedModel
    from medbench.engine.device import resolve_device
    from medbench.plugins.host import PluginHost

    device = resolve_device(args.device)
    host = PluginHost().load()
    model_plugin = host.registries.models.get(args.model)
    torch.manual_seed(SEED)
    model = model_plugin.build("classification", args.channels, args.classes, weights=None).to(device).eval()
    normalization = model_plugin.normalization(args.channels)
    generator = torch.Generator().manual_seed(SEED)
    shape = (args.batch_size, args.channels, args.image_size, args.image_size)
    x_cpu = torch.rand(shape, generator=generator)
    y_cpu = torch.randint(0, args.classes, (args.batch_size,), generator=generator)
    split = TensorDataset(x_cpu, y_cpu)
    bundle = DatasetBundle(
        train=split,
        val=split,
        test=split,
        class_names=tuple(f"class_{i}" for i in range(args.classes)),
        input_shape=tuple(shape[1:]),
        fingerprint="benchmark",
    )
    view = (1, -1, 1, 1)
    mean = torch.tensor(normalization.mean, dtype=torch.float32, device=device).view(view)
    std = torch.tensor(normalization.std, dtype=torch.float32, device=device).view(view)
    x, y = x_cpu.to(device), y_cpu.to(device)
    flops = forward_flops(model, (x - mean) / std)
    return Setup(
        device=device,
        defended=DefendedModel(model, normalization),
        bundle=bundle,
        model=model,
        mean=mean,
        std=std,
        x=x,
        y=y,
        host=host,
        flops_forward=flops,
    )


# --------------------------------------------------------------------------- (b) the hand-written loop


def handwritten_attack(
    model: nn.Module,
    mean: torch.Tensor,
    std: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    eps_step: float,
    steps: int,
    random_start: bool,
    start: torch.Tensor | None = None,
) -> torch.Tensor:
    """L∞ PGD step for step as ART's PyTorch PGD; FGSM is one step of ε without random start.

    ``start`` is the random offset in the ε-ball (default: drawn with torch on ``x``'s device).
    FGSM (``random_start=False``, one step of ``eps_step >= eps``) skips the projection, which
    cannot change a single step of ε from ``x``. The caller freezes the parameters.
    """
    project = random_start or steps > 1 or eps_step < eps
    with torch.no_grad():
        if random_start:
            noise = start if start is not None else torch.empty_like(x).uniform_(-eps, eps)
            x_adv = (x + noise).clamp_(0.0, 1.0)
        else:
            x_adv = x.detach()
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        loss = F.cross_entropy(model((x_adv - mean) / std), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        with torch.no_grad():
            x_adv = (x_adv + eps_step * grad.sign()).clamp_(0.0, 1.0)
            if project:
                x_adv = x + (x_adv - x).clamp_(-eps, eps)
    return x_adv.detach()


def medbench_random_noise(x: torch.Tensor, eps: float, seed: int) -> torch.Tensor:
    """The noise of the random start medbench's PGD draws for ``seed`` (on ``x``'s device)."""
    from medbench.building.pgd import uniform_noise
    from medbench_art.linf_iterative import seeded_generator

    return uniform_noise(tuple(x.shape), eps, seeded_generator(seed, x.device), x.device)


# --------------------------------------------------------------------------- the methods


def cell_craft(
    evaluator: Any, attack: Any, estimator: Any, x: torch.Tensor, y: torch.Tensor, budget: float, seed: int
) -> Any:
    """What ``MatrixRunner._run_cell`` calls for one batch of a cell: the ``AttackResult``."""
    try:
        from medbench.attacking.evaluation import craft_splitting_on_oom
    except ImportError:  # a harness without the out-of-memory retry
        return evaluator.craft(attack, estimator, x, y, budget, seed)
    return craft_splitting_on_oom(evaluator, attack, estimator, x, y, budget, seed)


class Normalized(nn.Module):
    """The model with its normalisation in front, for torchattacks (which takes [0, 1] input)."""

    def __init__(self, model: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.model, self.mean, self.std = model, mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


def make_methods(
    setup: Setup, attack_name: str, steps: int, chosen: list[str]
) -> tuple[dict[str, Callable[[], Any]], dict[str, str], Any, Any]:
    """The callables to time, what was skipped and why, the medbench attack and estimator."""
    from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    from medbench.attacking.evaluation import ClassificationEvaluator
    from medbench.wrapping.estimators import classifier_estimator

    pgd = attack_name == "pgd"
    eps_step = STEP_RATIO * EPS if pgd else EPS
    overrides = {"max_iter": steps, "step_ratio": STEP_RATIO} if pgd else {}
    attack = setup.host.registries.attacks.get(attack_name).configured(overrides)
    estimator = classifier_estimator(setup.defended, setup.bundle, setup.device)
    evaluator = ClassificationEvaluator(setup.bundle, setup.device, None, setup.x.shape[0])
    x, y, device = setup.x, setup.y, setup.device
    methods: dict[str, Callable[[], Any]] = {}
    skipped: dict[str, str] = {}

    methods["medbench"] = lambda: cell_craft(evaluator, attack, estimator, x, y, EPS, SEED).x_adv
    methods["handwritten"] = lambda: handwritten_attack(
        setup.model, setup.mean, setup.std, x, y, eps=EPS, eps_step=eps_step, steps=steps, random_start=pgd
    )

    x_np, y_np = x.cpu().numpy(), y.cpu().numpy()
    normalization = setup.defended.normalization
    art_classifier = PyTorchClassifier(
        model=setup.model,
        loss=nn.CrossEntropyLoss(),
        input_shape=tuple(x.shape[1:]),
        nb_classes=setup.bundle.num_classes,
        clip_values=(0.0, 1.0),
        preprocessing=(np.array(normalization.mean), np.array(normalization.std)),
        device_type="gpu" if device.type == "cuda" else "cpu",
    )

    def art_attack(batch_size: int | None) -> Any:
        extra = {} if batch_size is None else {"batch_size": batch_size}
        if pgd:
            return ProjectedGradientDescent(
                art_classifier,
                norm=np.inf,
                eps=EPS,
                eps_step=eps_step,
                max_iter=steps,
                num_random_init=1,
                verbose=False,
                **extra,
            )
        return FastGradientMethod(art_classifier, norm=np.inf, eps=EPS, **extra)

    methods["art_default"] = lambda: art_attack(None).generate(x=x_np, y=y_np)
    methods["art_equal_batch"] = lambda: art_attack(x.shape[0]).generate(x=x_np, y=y_np)

    try:
        import torchattacks
    except ImportError as error:
        skipped["torchattacks"] = f"not importable ({error})"
    else:
        wrapped = Normalized(setup.model, setup.mean, setup.std).eval()
        ta = (
            torchattacks.PGD(wrapped, eps=EPS, alpha=eps_step, steps=steps, random_start=True)
            if pgd
            else torchattacks.FGSM(wrapped, eps=EPS)
        )
        methods["torchattacks"] = lambda: ta(x, y)
    return {k: v for k, v in methods.items() if k in chosen}, skipped, attack, estimator


FROZEN = {"medbench", "handwritten"}
"""Methods run with the parameters frozen, as the matrix does (``frozen_parameters``)."""


def timed_call(name: str, function: Callable[[], Any], setup: Setup) -> tuple[float, float, float]:
    """One call of a method: wall seconds, process CPU seconds and peak memory (MiB)."""
    from medbench.wrapping.estimators import frozen_parameters

    device = setup.device
    reset_peak_memory(device)
    with frozen_parameters(setup.defended) if name in FROZEN else contextlib.nullcontext():
        synchronize(device)
        wall, cpu = time.perf_counter(), time.process_time()
        function()
        synchronize(device)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall, cpu, peak_memory_mib(device)


def time_methods(
    methods: dict[str, Callable[[], Any]], setup: Setup, args: argparse.Namespace, steps: int
) -> list[Timing]:
    """Warm every method up, then time them round-robin (the order rotating every round).

    Interleaving spreads slow phases of a shared machine over all methods instead of one.
    """
    names = [name for name in METHODS if name in methods]
    for name in names:
        for _ in range(args.warmup):
            timed_call(name, methods[name], setup)
    walls: dict[str, list[float]] = {name: [] for name in names}
    cpus: dict[str, list[float]] = {name: [] for name in names}
    peaks: dict[str, float] = dict.fromkeys(names, 0.0)
    for round_index in range(args.repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            wall, cpu, peak = timed_call(name, methods[name], setup)
            walls[name].append(wall)
            cpus[name].append(cpu)
            peaks[name] = max(peaks[name], peak)
    image_steps = setup.x.shape[0] * steps
    rows = []
    for name in names:
        times = walls[name]
        median = statistics.median(times)
        quartiles = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
        rows.append(
            Timing(
                method=name,
                label=LABELS[name],
                times_s=times,
                median_s=median,
                min_s=min(times),
                max_s=max(times),
                iqr_s=quartiles[2] - quartiles[0],
                cpu_median_s=statistics.median(cpus[name]),
                image_steps_per_s=image_steps / median,
                tflops=3 * setup.flops_forward * steps / median / 1e12,
                peak_memory_mib=peaks[name],
            )
        )
    return rows


def check_agreement(
    setup: Setup, attack: Any, estimator: Any, attack_name: str, steps: int
) -> dict[str, Any]:
    """Run (a) and (b) once from the same random start; the largest difference of their outputs."""
    from medbench.attacking.evaluation import ClassificationEvaluator
    from medbench.wrapping.estimators import frozen_parameters

    pgd = attack_name == "pgd"
    seed = SEED + 1
    evaluator = ClassificationEvaluator(setup.bundle, setup.device, None, setup.x.shape[0])
    with frozen_parameters(setup.defended):
        x_a = cell_craft(evaluator, attack, estimator, setup.x, setup.y, EPS, seed).x_adv
        start = medbench_random_noise(setup.x, EPS, seed) if pgd else None
        x_b = handwritten_attack(
            setup.model,
            setup.mean,
            setup.std,
            setup.x,
            setup.y,
            eps=EPS,
            eps_step=STEP_RATIO * EPS if pgd else EPS,
            steps=steps,
            random_start=pgd,
            start=start,
        )
    difference = (x_a - x_b).abs()
    max_diff = float(difference.max())
    return {
        "max_abs_diff": max_diff,
        "fraction_differing": float((difference > AGREEMENT_TOLERANCE).float().mean()),
        "tolerance": AGREEMENT_TOLERANCE,
        "same_random_start": pgd,
        "agree": max_diff <= AGREEMENT_TOLERANCE,
        "linf_a": float((x_a - setup.x).abs().max()),
        "linf_b": float((x_b - setup.x).abs().max()),
    }


def profile_medbench(function: Callable[[], Any], setup: Setup, top: int) -> str:
    from medbench.wrapping.estimators import frozen_parameters

    profiler = cProfile.Profile()
    with frozen_parameters(setup.defended):
        profiler.enable()
        function()
        synchronize(setup.device)
        profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


RATIOS = {"b/a": ("handwritten", "medbench"), "a/c": ("medbench", "art_default")}
RATIOS.update({"a/c'": ("medbench", "art_equal_batch"), "a/d": ("medbench", "torchattacks")})
"""Throughput ratios: name → (numerator method, denominator method)."""


def ratios(report: AttackReport, statistic: str) -> dict[str, float | None]:
    """Throughput ratios from the median (``median_s``) or fastest (``min_s``) times."""
    rows = {row.method: row for row in report.rows}
    result: dict[str, float | None] = {}
    for name, (numerator, denominator) in RATIOS.items():
        if numerator in rows and denominator in rows:
            result[name] = getattr(rows[denominator], statistic) / getattr(rows[numerator], statistic)
        else:
            result[name] = None
    return result


def run_attack(setup: Setup, args: argparse.Namespace, attack_name: str) -> AttackReport:
    steps = args.steps if attack_name == "pgd" else 1
    methods, skipped, attack, estimator = make_methods(setup, attack_name, steps, args.methods)
    report = AttackReport(
        attack=attack_name,
        steps=steps,
        eps=EPS,
        eps_step=STEP_RATIO * EPS if attack_name == "pgd" else EPS,
        skipped=skipped,
    )
    report.rows = time_methods(methods, setup, args, steps)
    report.ratios = ratios(report, "median_s")
    report.ratios_of_min = ratios(report, "min_s")
    report.agreement = check_agreement(setup, attack, estimator, attack_name, steps)
    if args.profile and "medbench" in methods:
        report.profile = profile_medbench(methods["medbench"], setup, args.profile)
    return report


# --------------------------------------------------------------------------- output


def environment(setup: Setup, args: argparse.Namespace) -> dict[str, Any]:
    import art

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "art": art.__version__,
        "numpy": np.__version__,
        "device": str(setup.device),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor(),
    }
    if setup.device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(setup.device)
    try:
        import torchattacks

        info["torchattacks"] = torchattacks.__version__
    except ImportError:
        info["torchattacks"] = None
    return info


def format_report(report: AttackReport, setup: Setup, args: argparse.Namespace) -> str:
    memory = "peak CUDA MiB" if setup.device.type == "cuda" else "peak RSS MiB"
    shape = "x".join(str(size) for size in setup.x.shape)
    lines = [
        f"attack {report.attack}: {report.steps} step(s), eps={report.eps:.6f}, "
        f"eps_step={report.eps_step:.6f}, model {args.model}, batch {shape}, "
        f"device {setup.device}, {args.repeats} repeat(s) after {args.warmup} warm-up",
        f"{'method':<32} {'median s':>9} {'min s':>9} {'max s':>9} {'cpu s':>9} {'img-steps/s':>12} "
        f"{'TFLOP/s':>8} {memory:>14}",
    ]
    for row in report.rows:
        lines.append(
            f"{row.label:<32} {row.median_s:>9.4f} {row.min_s:>9.4f} {row.max_s:>9.4f} "
            f"{row.cpu_median_s:>9.4f} {row.image_steps_per_s:>12.1f} {row.tflops:>8.4f} "
            f"{row.peak_memory_mib:>14.1f}"
        )
    for name, why in report.skipped.items():
        lines.append(f"{LABELS[name]:<32} skipped: {why}")
    for title, values in (("", report.ratios), (" of the fastest runs", report.ratios_of_min)):
        shown = ", ".join(f"{key} = {value:.3f}" for key, value in values.items() if value is not None)
        lines.append(f"throughput ratios{title}: {shown or 'none (methods missing)'}")
    agreement = report.agreement
    lines.append(
        f"agreement (a) vs (b): max |x_a - x_b| = {agreement['max_abs_diff']:.3g} "
        f"({'same' if agreement['same_random_start'] else 'no'} random start; "
        f"{100 * agreement['fraction_differing']:.4f}% of values differ by more than "
        f"{agreement['tolerance']:g}) -> {'AGREE' if agreement['agree'] else 'DIFFER'}"
    )
    if report.profile:
        lines += ["cProfile of one (a) call, by cumulative time:", report.profile]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        setup = build_setup(args)
    except Exception as error:  # an unknown model or an unavailable device: one line, exit 2
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"forward FLOPs (FlopCounterMode, batch {args.batch_size}): {setup.flops_forward / 1e9:.3f} GFLOP; "
        "one attack step counted as 3 forwards"
    )
    reports = []
    for attack_name in args.attack:
        report = run_attack(setup, args, attack_name)
        reports.append(report)
        print(format_report(report, setup, args))
        print()
    if args.json is not None:
        payload = {
            "config": {
                "model": args.model,
                "image_size": args.image_size,
                "channels": args.channels,
                "classes": args.classes,
                "batch_size": args.batch_size,
                "steps": args.steps,
                "repeats": args.repeats,
                "warmup": args.warmup,
                "eps": EPS,
                "step_ratio": STEP_RATIO,
                "seed": SEED,
                "tiny": args.tiny,
                "flops_forward": setup.flops_forward,
                "flops_convention": "FlopCounterMode forward FLOPs x 3 per attack step",
                "throughput_unit": "image-steps per second (batch x steps / median seconds)",
            },
            "environment": environment(setup, args),
            "attacks": {report.attack: asdict(report) for report in reports},
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
