"""How the wall time of one ``medbench run`` matrix grows with cells, evaluated samples and image size.

Three sweeps on the embedded synthetic dataset ``phantom2d`` with ``smallcnn``, one defense
(``none``) and one attack (``pgd``), each varying one factor with the other two fixed:

* **cells**: the number of PGD budgets (``--eps 1/255,...,k/255``), one cell each;
* **samples**: the evaluated test images (``--n-eval``);
* **pixels**: the image size (``--set dataset.phantom2d.image_size=S``), reported and fitted
  against the pixel count S², since the work of a convolutional network grows with it.

Every configuration is a real matrix: ``medbench run OPTIONS`` (printed for the fixed
configuration) is run in this process by medbench's own click command, with the local executor,
into a SQLite MLflow store of its own (a new experiment per run, so nothing is resumed); its
output is discarded. The model is trained once per image size before any timing, into a model
cache in a temporary ``MEDBENCH_CACHE_DIR``, so the timed runs load cached weights.

What is timed:

* **wall**: the command's ``MatrixRunner.run()`` alone (the script wraps it in a timer):
  loading the cached model, the clean predictions, the gradient checks, every cell (attack,
  adversarial predictions, metrics, MLflow params, metrics and the example-image artifact) and
  the matrix's summary. Not timed: importing, loading the plugins, parsing the options,
  generating the phantoms and opening the store, which ``medbench run`` does once per process,
  before the matrix.
* **attack**: the sum of the cells' recorded ``seconds`` metric (crafting the adversarial
  batches and predicting them), i.e. the part that should scale exactly.
* **other** = wall − attack: the per-matrix and per-cell overheads.

Each sweep prints, per point, the median over ``--repeats`` of both times and their value per
unit (per cell, per sample, per pixel), then the exponent k of a least-squares fit of
time ≈ c·xᵏ on log-log axes (``numpy.polyfit``) with its R². Linear scaling is k = 1; a fixed
cost that does not grow with x pulls k below 1, so a straight line time ≈ a + b·x is fitted too:
a is the cost that does not grow with x, b what each further cell, sample or pixel adds. The
configurations are timed round-robin, the order rotating every round, so that slow phases of a
shared machine fall on all of them.

    python benchmarks/matrix_scaling.py --tiny --device cpu          # CI: seconds
    OMP_NUM_THREADS=1 python benchmarks/matrix_scaling.py --device cpu --repeats 3 --json out.json
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import itertools
import json
import math
import os
import platform
import shlex
import tempfile
import time
from collections.abc import Sequence
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any
from unittest import mock

import numpy as np
import torch


@dataclass(frozen=True)
class Config:
    """One matrix: the three factors the sweeps vary."""

    cells: int
    n_eval: int
    image_size: int


@dataclass(frozen=True)
class Setup:
    """What every matrix of a run shares, and the sweeps' points."""

    n_samples: int
    epochs: int
    max_iter: int
    fixed: Config
    cells: tuple[int, ...]
    n_eval: tuple[int, ...]
    image_size: tuple[int, ...]


PRESETS = {
    "full": Setup(
        n_samples=4000,  # a test split of 600 images
        epochs=1,
        max_iter=10,
        fixed=Config(cells=2, n_eval=256, image_size=32),
        cells=(1, 2, 4, 8),
        n_eval=(64, 128, 256, 512),
        image_size=(16, 32, 64, 96),
    ),
    "tiny": Setup(
        n_samples=200,  # a test split of 30 images
        epochs=1,
        max_iter=2,
        fixed=Config(cells=2, n_eval=16, image_size=16),
        cells=(1, 2, 4),
        n_eval=(8, 16, 24),
        image_size=(16, 24, 32),
    ),
}
SWEEPS = {  # name: (the Config field it varies, unit of x, x of a Config)
    "cells": ("cells", "cell", lambda config: config.cells),
    "samples": ("n_eval", "sample", lambda config: config.n_eval),
    "pixels": ("image_size", "pixel", lambda config: config.image_size**2),
}


@dataclass
class Timing:
    """One timed matrix."""

    wall_s: float
    attack_s: float
    cells: int


@dataclass
class Fit:
    """time ≈ coefficient · x^exponent, fitted on log-log axes; and time ≈ fixed + slope · x."""

    exponent: float
    coefficient: float
    r2: float | None
    fixed_s: float
    """Intercept of the straight-line fit: the time that does not grow with x."""
    slope_s: float
    """Slope of the straight-line fit: the time each further unit of x adds."""


def run_arguments(config: Config, setup: Setup, device: str) -> list[str]:
    """The ``medbench run`` options of one matrix."""
    eps = ",".join(f"{k}/255" for k in range(1, config.cells + 1))
    return [
        "--suite", "smoke", "--model", "smallcnn", "--defense", "none", "--attack", "pgd",
        "--eps", eps, "--n-eval", str(config.n_eval), "--epochs", str(setup.epochs),
        "--set", f"dataset.phantom2d.image_size={config.image_size}",
        "--set", f"dataset.phantom2d.n_samples={setup.n_samples}",
        "--set", f"attack.pgd.max_iter={setup.max_iter}",
        "--device", device,
    ]  # fmt: skip


def fit_power_law(x: Sequence[float], t: Sequence[float]) -> Fit:
    """Least-squares fit of log t = log c + k log x (R² on the log values), and of t = a + b x."""
    x_array, t_array = np.asarray(x, dtype=float), np.asarray(t, dtype=float)
    log_x, log_t = np.log(x_array), np.log(t_array)
    exponent, intercept = np.polyfit(log_x, log_t, 1)
    residual = float(np.sum((log_t - (exponent * log_x + intercept)) ** 2))
    total = float(np.sum((log_t - log_t.mean()) ** 2))
    slope, fixed = np.polyfit(x_array, t_array, 1)
    return Fit(
        exponent=float(exponent),
        coefficient=float(np.exp(intercept)),
        r2=1.0 - residual / total if total > 0 else None,
        fixed_s=float(fixed),
        slope_s=float(slope),
    )


class MatrixTimer:
    """Runs ``medbench run OPTIONS`` in this process, timing only its ``MatrixRunner.run()``."""

    def __init__(self, root: Path) -> None:
        self.tracking_uri = f"sqlite:///{root / 'store.db'}"
        self.runs = 0

    def run(self, arguments: list[str]) -> Timing:
        from medbench.cli import cli
        from medbench.engine.cells import CellResult
        from medbench.engine.runner import MatrixRunner

        self.runs += 1
        timed: list[tuple[float, list[CellResult]]] = []
        untimed_run = MatrixRunner.run

        def timed_run(runner: MatrixRunner) -> list[CellResult]:
            _synchronize(runner.plan.device)
            started = time.perf_counter()
            results = untimed_run(runner)
            _synchronize(runner.plan.device)
            timed.append((time.perf_counter() - started, results))
            return results

        command = [
            "run", *arguments, "--json", "--tracking-uri", self.tracking_uri,
            "--experiment", f"matrix-scaling-{self.runs}",  # a new experiment: nothing is resumed
        ]  # fmt: skip
        output, errors = io.StringIO(), io.StringIO()
        # the command's own code, as `medbench run` runs it (its table and progress are discarded)
        with (
            mock.patch.object(MatrixRunner, "run", timed_run),
            redirect_stdout(output),
            redirect_stderr(errors),
        ):
            code = cli.main(args=command, prog_name="medbench", standalone_mode=False)
        if code or len(timed) != 1:
            raise SystemExit(f"medbench {shlex.join(command)} failed ({code}):\n{errors.getvalue()[-3000:]}")
        wall, results = timed[0]
        failed = [result for result in results if result.status != "FINISHED"]
        if failed:
            raise SystemExit(f"{len(failed)} cell(s) failed, e.g. {failed[0].cell.label}: {failed[0].error}")
        return Timing(wall, sum(result.metrics["seconds"] for result in results), len(results))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sweep_points(setup: Setup) -> dict[str, list[Config]]:
    """The configurations of each sweep: one factor varied, the others at ``setup.fixed``."""
    return {
        name: [dataclasses.replace(setup.fixed, **{field: value}) for value in getattr(setup, field)]
        for name, (field, _, _) in SWEEPS.items()
    }


def measure(setup: Setup, device: str, repeats: int, warmup: int) -> dict[Config, list[Timing]]:
    """Timings of every distinct configuration of the sweeps, ``repeats`` each, round-robin."""
    configs = list(dict.fromkeys(itertools.chain.from_iterable(sweep_points(setup).values())))
    with tempfile.TemporaryDirectory(prefix="medbench-matrix-scaling-") as directory:
        root = Path(directory)
        os.environ["MEDBENCH_CACHE_DIR"] = str(root / "cache")
        timer = MatrixTimer(root)
        # train (and cache) the model of every image size with the smallest matrix of that size
        for size in sorted({config.image_size for config in configs}):
            smallest = min((c for c in configs if c.image_size == size), key=lambda c: (c.cells, c.n_eval))
            timer.run(run_arguments(smallest, setup, device))
        for _ in range(warmup):
            for config in configs:
                timer.run(run_arguments(config, setup, device))
        timings: dict[Config, list[Timing]] = {config: [] for config in configs}
        for round_ in range(repeats):
            shift = round_ % len(configs)
            for config in configs[shift:] + configs[:shift]:
                timing = timer.run(run_arguments(config, setup, device))
                if timing.cells != config.cells:
                    raise SystemExit(f"{config}: the matrix ran {timing.cells} cells")
                timings[config].append(timing)
    return timings


def report(setup: Setup, timings: dict[Config, list[Timing]]) -> dict[str, Any]:
    """Print a table and the fits per sweep; return the same figures."""
    result: dict[str, Any] = {}
    for name, configs in sweep_points(setup).items():
        field, unit, x_of = SWEEPS[name]
        fixed = {key: value for key, value in dataclasses.asdict(setup.fixed).items() if key != field}
        shown_fixed = ", ".join(f"{key} {value}" for key, value in fixed.items())
        print(f"\nsweep {name}: x = {'image_size²' if name == 'pixels' else field} ({shown_fixed} fixed)")
        print(
            f"{'cells':>5} {'n_eval':>6} {'size':>5} {'x':>8} {'wall s':>8} {f'wall s/{unit}':>14} "
            f"{'attack s':>9} {f'attack s/{unit}':>15} {'other s':>8}"
        )
        points = []
        for config in configs:
            runs = timings[config]
            x = x_of(config)
            wall = median(t.wall_s for t in runs)
            attack = median(t.attack_s for t in runs)
            points.append(
                {
                    "x": x,
                    **dataclasses.asdict(config),
                    "wall_s": [t.wall_s for t in runs],
                    "attack_s": [t.attack_s for t in runs],
                    "wall_median_s": wall,
                    "attack_median_s": attack,
                    "wall_per_unit_s": wall / x,
                    "attack_per_unit_s": attack / x,
                    "other_median_s": median(t.wall_s - t.attack_s for t in runs),
                }
            )
            point = points[-1]
            print(
                f"{config.cells:>5} {config.n_eval:>6} {config.image_size:>5} {x:>8} {wall:>8.3f} "
                f"{wall / x:>14.4g} {attack:>9.3f} {attack / x:>15.4g} {point['other_median_s']:>8.3f}"
            )
        x_values = [p["x"] for p in points]
        fits = {
            kind: fit_power_law(x_values, [p[f"{kind}_median_s"] for p in points])
            for kind in ("wall", "attack")
        }
        for kind, fit in fits.items():
            r2 = "n/a" if fit.r2 is None else f"{fit.r2:.4f}"
            print(
                f"fitted exponent ({kind}): time ~ {name}^{fit.exponent:.3f} (R² {r2}); "
                f"straight line: {fit.fixed_s:.3f} s + {fit.slope_s:.4g} s/{unit}"
            )
        result[name] = {
            "x": "image_size**2" if name == "pixels" else field,
            "unit": unit,
            "fixed": fixed,
            "points": points,
            "fit": {kind: dataclasses.asdict(fit) for kind, fit in fits.items()},
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a few small matrices (CI): seconds")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--repeats", type=int, help="timed runs of every configuration (3; tiny: 1)")
    parser.add_argument("--warmup", type=int, default=0, help="untimed rounds before the timed ones")
    parser.add_argument("--cells", type=int, nargs="+", help="points of the cells sweep")
    parser.add_argument("--n-eval", type=int, nargs="+", help="points of the samples sweep")
    parser.add_argument("--image-size", type=int, nargs="+", help="points of the pixels sweep (sides)")
    parser.add_argument(
        "--fixed", type=int, nargs=3, metavar=("CELLS", "N_EVAL", "SIZE"), help="the factors held fixed"
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    setup = PRESETS["tiny" if args.tiny else "full"]
    overrides: dict[str, Any] = {
        key: tuple(getattr(args, key)) for key in ("cells", "n_eval", "image_size") if getattr(args, key)
    }
    if args.fixed:
        overrides["fixed"] = Config(*args.fixed)
    setup = dataclasses.replace(setup, **overrides)
    repeats = args.repeats or (1 if args.tiny else 3)
    fixed_command = shlex.join(["medbench", "run", *run_arguments(setup.fixed, setup, args.device)])
    print(
        f"matrix scaling: smallcnn on phantom2d ({setup.n_samples} samples, {setup.epochs} training "
        f"epoch(s), cached), defense none, pgd {setup.max_iter} steps; device {args.device}, "
        f"torch threads {torch.get_num_threads()}; {repeats} repeat(s), median shown"
    )
    print(f"fixed configuration: {fixed_command}")
    print("wall: MatrixRunner.run(); attack: sum of the cells' recorded seconds; other: wall - attack")
    started = time.perf_counter()
    timings = measure(setup, args.device, repeats, args.warmup)
    sweeps = report(setup, timings)
    elapsed = time.perf_counter() - started
    timed = sum(len(runs) for runs in timings.values())
    print(f"\n{len(timings)} configurations, {timed} timed matrices, {elapsed:.0f} s in all")
    if args.json:
        document = {
            "config": {
                "tiny": args.tiny,
                "device": args.device,
                "repeats": repeats,
                "warmup": args.warmup,
                **dataclasses.asdict(setup),
                "fixed_command": fixed_command,
            },
            "environment": {
                "torch": torch.__version__,
                "torch_threads": torch.get_num_threads(),
                "python": platform.python_version(),
                "cpu_count": os.cpu_count(),
            },
            "sweeps": sweeps,
            "total_seconds": elapsed,
        }
        args.json.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
    if not all(
        math.isfinite(s["fit"][kind]["exponent"]) for s in sweeps.values() for kind in ("wall", "attack")
    ):
        raise SystemExit("a fitted exponent is not a finite number")


if __name__ == "__main__":
    main()
