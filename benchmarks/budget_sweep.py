"""An 8-budget FGSM sweep against 8 separate FGSM runs, at two levels.

* **matrix**: one ``medbench run`` matrix with FGSM at ε = 1/255 … 8/255 (8 cells; the matrix
  crafts them with ``FGSM.generate_budgets``: one input gradient per batch for every ε) against
  8 matrices of one budget each, all in this process through the code ``medbench run`` runs
  (:class:`matrix_scaling.MatrixTimer`: ``plan_matrix`` + ``MatrixRunner.run()``, cached model,
  a SQLite store). Timed: ``MatrixRunner.run()``, which includes what every matrix does once
  (loading the cached model, clean predictions, gradient checks, the parent run, the summary
  and curves). Not timed: process start-up, which 8 separate ``medbench run`` commands would
  also pay 8 times.
* **attack**: on one estimator and batch (medbench's matrix path: ``classifier_estimator``,
  frozen parameters), the registered ``fgsm`` plugin's ``generate_budgets`` for the 8 budgets
  against 8 ``generate`` calls; each followed by the robust prediction of every adversarial
  batch (``predict_logits``), as a cell does. Crafting alone and crafting + prediction are
  reported: the shared gradient saves 7 of 8 backward passes, not the 8 predictions.

Both check that the shared and the separate paths give the same robust accuracy (the
adversarial examples are bit-identical on the CPU: ``tests/harness/test_shared_budgets.py``).

    python benchmarks/budget_sweep.py --tiny --device cpu            # CI: seconds
    OMP_NUM_THREADS=1 python benchmarks/budget_sweep.py --device cpu --json sweep.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from matrix_scaling import MatrixTimer

BUDGETS = 8


def matrix_arguments(eps: list[int], args: argparse.Namespace) -> list[str]:
    """The ``medbench run`` options of one FGSM matrix at ``eps`` (in /255)."""
    return [
        "--suite", "smoke", "--model", args.model, "--defense", "none", "--attack", "fgsm",
        "--eps", ",".join(f"{k}/255" for k in eps), "--n-eval", str(args.n_eval), "--epochs", "1",
        "--set", f"dataset.phantom2d.image_size={args.image_size}",
        "--set", f"dataset.phantom2d.n_samples={args.n_samples}",
        "--device", args.device,
    ]  # fmt: skip


def matrix_level(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Wall seconds of one 8-budget matrix and of 8 one-budget matrices, ``repeats`` rounds."""
    os.environ["MEDBENCH_CACHE_DIR"] = str(root / "cache")
    timer = MatrixTimer(root)
    budgets = list(range(1, BUDGETS + 1))
    timer.run(matrix_arguments([1], args))  # trains and caches the model
    shared, separate = [], []
    for _ in range(args.repeats):
        shared.append(timer.run(matrix_arguments(budgets, args)).wall_s)
        separate.append(sum(timer.run(matrix_arguments([k], args)).wall_s for k in budgets))
    return {
        "shared_s": shared,
        "separate_s": separate,
        "speedup": median(separate) / median(shared),
    }


def attack_level(args: argparse.Namespace) -> dict[str, Any]:
    """The shared ``generate_budgets`` against 8 ``generate`` calls, with and without predictions."""
    from medbench.api import DefendedModel
    from medbench.plugins.host import load_plugins
    from medbench.testing import tiny_bundle
    from medbench.wrapping.estimators import classifier_estimator, frozen_parameters, predict_logits

    host = load_plugins(check=False)
    device = torch.device(args.device)
    model_plugin = host.registries.models.get(args.model)
    bundle = tiny_bundle(size=args.image_size, channels=3)
    torch.manual_seed(0)
    defended = DefendedModel(model_plugin.build("classification", 3, 2), model_plugin.normalization(3))
    defended.to(device).eval()
    estimator = classifier_estimator(defended, bundle, device)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch_size, 3, args.image_size, args.image_size, generator=generator).to(device)
    y = torch.randint(0, 2, (args.batch_size,), generator=generator).to(device)
    fgsm = host.registries.attacks.get("fgsm")
    budgets = [k / 255 for k in range(1, BUDGETS + 1)]

    def accuracy(batches: list[Any]) -> list[float]:
        return [float((predict_logits(estimator, b).argmax(1) == y).float().mean()) for b in batches]

    def shared() -> list[Any]:
        return fgsm.generate_budgets(estimator, x, y, budgets, seeds=[0] * BUDGETS)

    def separate() -> list[Any]:
        return [fgsm.generate(estimator, x, y, budget, seed=0) for budget in budgets]

    methods: dict[str, Callable[[], Any]] = {
        "shared craft": shared,
        "separate craft": separate,
        "shared craft+predict": lambda: accuracy(shared()),
        "separate craft+predict": lambda: accuracy(separate()),
    }
    times: dict[str, list[float]] = {name: [] for name in methods}
    with frozen_parameters(defended):
        if accuracy(shared()) != accuracy(separate()):
            raise SystemExit("the shared and the separate FGSM sweeps disagree")
        for round_ in range(args.repeats + 1):  # the first round warms up
            for name, method in methods.items():
                _synchronize(device)
                started = time.perf_counter()
                method()
                _synchronize(device)
                if round_:
                    times[name].append(time.perf_counter() - started)
    medians = {name: median(values) for name, values in times.items()}
    return {
        "times_s": times,
        "median_s": medians,
        "speedup_craft": medians["separate craft"] / medians["shared craft"],
        "speedup_craft_predict": medians["separate craft+predict"] / medians["shared craft+predict"],
    }


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="small sizes (CI): seconds")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--model", default="resnet18", help="model plugin (default resnet18)")
    parser.add_argument("--image-size", type=int, help="image side (64; tiny: 16)")
    parser.add_argument("--batch-size", type=int, help="attack-level batch (64; tiny: 8)")
    parser.add_argument("--n-eval", type=int, help="matrix-level test images (256; tiny: 16)")
    parser.add_argument("--repeats", type=int, help="timed rounds (3; tiny: 1)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    tiny = {"image_size": 16, "batch_size": 8, "n_eval": 16, "repeats": 1, "n_samples": 200}
    full = {"image_size": 64, "batch_size": 64, "n_eval": 256, "repeats": 3, "n_samples": 2000}
    for key, value in (tiny if args.tiny else full).items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.tiny:
        args.model = "smallcnn"
    print(
        f"FGSM sweep of {BUDGETS} budgets (1/255 ... 8/255) against {BUDGETS} separate runs: model "
        f"{args.model}, {args.image_size}x{args.image_size}, device {args.device}, torch threads "
        f"{torch.get_num_threads()}, {args.repeats} repeat(s), medians"
    )
    attack = attack_level(args)
    print(f"\nattack level (batch {args.batch_size}):")
    for name, value in attack["median_s"].items():
        print(f"  {name:<24} {value:9.4f} s")
    print(
        f"  speedup of the shared gradient: crafting {attack['speedup_craft']:.2f}x, "
        f"crafting + predictions {attack['speedup_craft_predict']:.2f}x"
    )
    with tempfile.TemporaryDirectory(prefix="medbench-budget-sweep-") as directory:
        matrix = matrix_level(args, Path(directory))
    print(f"\nmatrix level (phantom2d, {args.n_eval} test images, MatrixRunner.run()):")
    print(f"  one matrix, {BUDGETS} budgets      {median(matrix['shared_s']):9.3f} s")
    print(f"  {BUDGETS} matrices, one budget each {median(matrix['separate_s']):9.3f} s")
    print(f"  speedup {matrix['speedup']:.2f}x")
    if args.json:
        document = {"config": vars(args) | {"json": str(args.json)}, "attack": attack, "matrix": matrix}
        args.json.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
