"""What a finished matrix logs on its parent run: the results document, the cell counts, the
sanity flags and the robustness curves, read back from MLflow as the leaderboard reads them."""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable
from pathlib import Path

from medbench.engine.cells import CellResult, MatrixPlan
from medbench.errors import first_line
from medbench.measuring.sanity import Flag
from medbench.recording import layout
from medbench.recording.tracking import Tracker


def log_summary(
    plan: MatrixPlan, tracker: Tracker, results: list[CellResult], notify: Callable[[str], None]
) -> list[Flag]:
    """Log ``results.json``, the cell counts, and the board's checks and curves; return the flags."""
    from medbench.reporting.report import results_document

    assert plan.parent_run_id is not None
    document = results_document(plan.experiment, plan.parent_run_id, plan.dataset.name, results)
    tracker.log_text(plan.parent_run_id, json.dumps(document, indent=2), layout.ARTIFACT_RESULTS)
    finished = [r for r in results if r.status == "FINISHED"]
    tracker.log_metrics(
        plan.parent_run_id,
        {
            layout.METRIC_CELLS_FINISHED: float(len(finished)),
            layout.METRIC_CELLS_FAILED: float(len(results) - len(finished)),
        },
    )
    return log_board(plan, tracker, results, notify)


def log_board(
    plan: MatrixPlan, tracker: Tracker, results: list[CellResult], notify: Callable[[str], None]
) -> list[Flag]:
    """Sanity flags (``sanity.json``, tags ``medbench.needs_adaptive_evaluation`` and
    ``medbench.at_chance``) and the robustness curves (``robustness_curves.png``/``.svg``)
    of this run's cells, read back from MLflow as the leaderboard reads them. Never fails
    the matrix: a failure is reported and no flags are returned."""
    from medbench.leaderboard.curves import plot_robustness_curves
    from medbench.leaderboard.records import latest_cells, load_records
    from medbench.measuring.sanity import check_cells, primary_metric

    assert plan.parent_run_id is not None
    try:
        cells, _ = load_records(tracker.tracking_uri, plan.experiment)
        run_ids = {r.cell.run_id for r in results}
        mine = latest_cells([c for c in cells if c.run_id in run_ids])
        if not mine:
            return []
        # the suite's ranking metric, as on its leaderboard, when its cells logged it
        metric = plan.spec.rank_by
        if metric is None or all(math.isnan(c.metric(f"robust_{metric}")) for c in mine):
            metric = primary_metric(mine)
        flags = check_cells(mine, metric)
        tracker.log_text(
            plan.parent_run_id, json.dumps([f.as_dict() for f in flags], indent=2), layout.ARTIFACT_SANITY
        )
        tracker.set_tags(
            plan.parent_run_id,
            {
                layout.TAG_NEEDS_ADAPTIVE: ",".join(sorted({f.row for f in flags if not f.of_model})),
                layout.TAG_AT_CHANCE: ",".join(sorted({f.row for f in flags if f.of_model})),
            },
        )
        with tempfile.TemporaryDirectory() as directory:
            title = f"{plan.spec.name} on {plan.dataset.name}"
            target = Path(directory) / layout.ARTIFACT_CURVES
            for path in plot_robustness_curves(mine, f"robust_{metric}", target, title):
                tracker.log_artifact(plan.parent_run_id, path)
        return flags
    except Exception as error:
        notify(f"sanity checks and curves skipped: {first_line(error)}")
        return []
