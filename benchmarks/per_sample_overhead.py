"""What keeping per-sample outcomes costs a cell: ``per_sample.npz`` against the cell's own time.

On one defended model (``smallcnn`` on ``phantom2d``, untrained: the cost does not depend on
the weights) and the evaluation batches of a matrix, the script times, as a cell does:

* **cell**: ``attacking.cell.attack_cell`` (crafting every batch, checking it, predicting, the
  aggregate metrics and the per-sample outcomes), for PGD-10 and FGSM;
* **per-sample**: what the per-sample outcomes add to it: ``TaskEvaluator.measure`` with
  ``with_ids`` and writing ``per_sample.npz`` (what the runner logs), minus the aggregate
  metrics alone (``classification_metrics``, what a cell computed before).

Reported: the median of ``--repeats`` runs of each, and per-sample as a share of the cell.

    python benchmarks/per_sample_overhead.py --tiny                   # CI: seconds
    OMP_NUM_THREADS=2 python benchmarks/per_sample_overhead.py --n-eval 450 --json overhead.json
"""

from __future__ import annotations

import argparse
import functools
import json
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

import torch

from medbench.api import DefendedModel
from medbench.attacking.cell import attack_cell
from medbench.attacking.evaluation import ClassificationEvaluator, eval_batches
from medbench.engine.cells import Cell
from medbench.measuring import per_sample
from medbench.measuring.metrics import classification_metrics
from medbench.plugins.host import load_plugins
from medbench.wrapping.estimators import frozen_parameters


def _time(function: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return median(times)


def _measure_and_save(
    evaluator: Any, batches: Any, run: Any, clean: Any, fingerprint: str, directory: Path
) -> None:
    """What a cell measures now (metrics and per-sample outcomes) and the file the runner logs."""
    _, outcomes = evaluator.measure(batches, run.adversarial, clean, run.attacked)
    per_sample.save(per_sample.with_ids(outcomes, fingerprint), directory / per_sample.ARTIFACT)


def measure(n_eval: int, image_size: int, repeats: int) -> dict[str, Any]:
    """Median seconds of a cell and of its per-sample part, for PGD-10 and FGSM."""
    host = load_plugins()
    dataset = host.registries.datasets.get("phantom2d").configured({"image_size": image_size})
    bundle = dataset.load(None, 0)
    model = host.registries.models.get("smallcnn")
    torch.manual_seed(0)
    module = model.build(bundle.task, bundle.in_channels, bundle.num_classes)
    defended = DefendedModel(module.eval(), model.normalization(bundle.in_channels))
    device = torch.device("cpu")
    evaluator = ClassificationEvaluator(bundle, device, None, 128)
    batches = eval_batches(bundle, n_eval, 128, device)
    estimator = evaluator.estimator(defended)
    report: dict[str, Any] = {"n_eval": n_eval, "image_size": image_size, "threads": torch.get_num_threads()}
    with frozen_parameters(defended), tempfile.TemporaryDirectory() as directory:
        clean = evaluator.clean_outputs(estimator, batches)
        for name in ("pgd", "fgsm"):
            attack = host.registries.attacks.get(name)
            cell = Cell(0, "smallcnn", "none", name, "eps", 8 / 255, "linf")

            def run_cell(attack: Any = attack, cell: Cell = cell) -> Any:
                return attack_cell(cell, attack, evaluator, estimator, estimator, batches, clean, 0)

            cell_seconds = _time(run_cell, repeats)
            run = run_cell()
            labels = torch.cat([y for _, y in batches])
            x, x_adv = torch.cat([x for x, _ in batches]), torch.cat(run.adversarial)
            logits, adv_logits = torch.cat(clean.outputs), torch.cat(run.attacked)

            aggregate_only = functools.partial(classification_metrics, labels, logits, adv_logits, x, x_adv)
            with_samples = functools.partial(
                _measure_and_save, evaluator, batches, run, clean, bundle.fingerprint, Path(directory)
            )
            extra = max(_time(with_samples, repeats) - _time(aggregate_only, repeats), 0.0)
            report[name] = {
                "cell_seconds": cell_seconds,
                "per_sample_seconds": extra,
                "share_of_cell": extra / cell_seconds,
                "npz_bytes": (Path(directory) / per_sample.ARTIFACT).stat().st_size,
            }
    return report


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--n-eval", type=int, default=450)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tiny", action="store_true", help="a few samples and one repeat (CI)")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    if args.tiny:
        args.n_eval, args.image_size, args.repeats = 16, 16, 1
    report = measure(args.n_eval, args.image_size, args.repeats)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
