"""The run lifecycle: resume, the parent run, one defended model at a time, one run per cell.

:class:`MatrixRunner` trains (or loads) each defended model once, computes its clean
predictions once, and runs every attack cell against it (:mod:`medbench.attacking.cell`),
logging each cell as a nested MLflow run (:mod:`medbench.recording.layout`). A failure inside
a cell marks that cell FAILED and the matrix goes on. Cells already FINISHED in the store
under the same key are reused (resume).
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from medbench.api import DefendedModel, Defense, Model
from medbench.attacking.cell import (
    SharedBatches,
    attack_cell,
    check_output_shapes,
    craft_shared_budgets,
    plugin_metrics,
)
from medbench.attacking.evaluation import (
    Batch,
    ClassificationEvaluator,
    CleanOutputs,
    SegmentationEvaluator,
    TaskEvaluator,
)
from medbench.building.cache import ModelCache
from medbench.building.defending import STANDARD_DEFENSE, DefenseBuilder
from medbench.building.user_models import parse_normalization
from medbench.engine.batching import plan_batches
from medbench.engine.cells import Cell, CellResult, MatrixPlan, ProgressSink, cell_seed
from medbench.errors import CellError, UsageError, first_line
from medbench.measuring import per_sample
from medbench.measuring.gradient_checks import group_checks
from medbench.measuring.lpips_similarity import lpips_similarity
from medbench.measuring.sanity import Flag
from medbench.plugins.host import PluginHost
from medbench.recording import layout
from medbench.recording.summary import log_summary
from medbench.recording.tracking import Tracker
from medbench.reporting.images import image_rows
from medbench.wrapping.acceleration import CPU_EVAL_BATCH_SIZE, Acceleration
from medbench.wrapping.estimators import frozen_parameters


class MatrixRunner:
    """Runs a :class:`MatrixPlan`, logging to MLflow through a :class:`Tracker`."""

    def __init__(
        self,
        plan: MatrixPlan,
        host: PluginHost,
        tracker: Tracker,
        progress: ProgressSink,
        cache: ModelCache,
        rerun: bool = False,
        shard: tuple[int, int] | None = None,
    ) -> None:
        self.plan = plan
        self.host = host
        self.tracker = tracker
        self.progress = progress
        self.cache = cache
        self.rerun = rerun
        """Run every cell, also those already FINISHED in the store (``--rerun``)."""
        self.shard = shard
        """``(i, n)``: a worker of the devices executor, running the defended-model groups
        ``i, i + n, i + 2n, ...`` under an existing parent run, without the summary."""
        self.results: list[CellResult] = []
        self.reused: list[CellResult] = []
        """Cells found FINISHED in the store under the same ``medbench.cell_key`` (not run again)."""
        self.flags: list[Flag] = []
        """Sanity flags of the finished matrix (:mod:`medbench.measuring.sanity`)."""
        self._lpips: Any = None
        self._surrogate_estimator: Any = None

    # ------------------------------------------------------------------ lifecycle

    def run(self) -> list[CellResult]:
        """Run the matrix's cells that the store does not hold yet, then log the summary.

        As a worker (``shard``), only this worker's groups run, under the plan's existing
        parent run, and the parent run is left open for the coordinating process.
        """
        plan = self.plan
        todo = [c for c in self._resume() if self._in_shard(c)]
        if plan.parent_run_id is None:
            self._open_parent_run()
            self.share_checkpoints(distributed=False)
        assert plan.parent_run_id is not None
        if self.shard is not None:
            self.share_checkpoints(distributed=True)
            self._run_cells(todo)
            return self.results
        status = "FAILED"
        try:
            self._hooks("before_matrix", matrix=plan)
            self._run_cells(todo)
            self.results = sorted(self.reused + self.results, key=lambda r: r.cell.index)
            self._hooks("after_matrix", matrix=plan, results=self.results)
            self.flags = log_summary(plan, self.tracker, self.results, self.progress.message)
            status = "FINISHED" if all(r.status == "FINISHED" for r in self.results) else "FAILED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            self.tracker.finish(plan.parent_run_id, status)
        return self.results

    def _resume(self) -> list[Cell]:
        """Close runs a killed process left RUNNING; return the cells still to run.

        Cells whose key has a FINISHED run in the experiment are taken from the store
        (unless ``rerun``), so that an interrupted matrix continues where it stopped.
        """
        closed = self.tracker.close_abandoned_runs(socket.gethostname(), _process_alive)
        if closed:
            self.progress.message(f"marked {closed} run(s) FAILED that a killed medbench run left RUNNING")
        cells = self.plan.cells
        if self.rerun:
            return list(cells)
        finished = self.tracker.finished_cells(c.key for c in cells)
        for cell in cells:
            run = finished.get(cell.key)
            if run is not None:
                cell.run_id = run.info.run_id
                self.reused.append(CellResult(cell, "FINISHED", dict(run.data.metrics)))
        if self.reused:
            self.progress.message(
                f"{len(self.reused)} of {len(cells)} cells already FINISHED in the store: "
                "kept (--rerun runs them again)"
            )
        done = {id(r.cell) for r in self.reused}
        return [c for c in cells if id(c) not in done]

    def start_parent_run(self) -> str:
        """Create the parent run as the coordinator of the devices or Ray executor, before its workers.

        Also turns on checkpoint sharing (:mod:`medbench.building.checkpoint_store`) and trains
        (or fetches) the ``--surrogate`` once, here, so that every worker downloads it instead
        of training it again. (``run`` creates the parent run itself when the plan has none.)
        """
        run_id = self._open_parent_run()
        self.share_checkpoints(distributed=True)
        try:
            self._prepare_surrogate()
        except BaseException:
            self.tracker.finish(run_id, "FAILED")
            raise
        return run_id

    def _open_parent_run(self) -> str:
        plan = self.plan
        plan.parent_run_id = self.tracker.start_run(
            name=f"{plan.spec.name}-{time.strftime('%Y%m%d-%H%M%S')}",
            params=layout.parent_params(plan),
            tags=layout.parent_tags(plan),
        )
        return plan.parent_run_id

    def share_checkpoints(self, distributed: bool) -> None:
        """Share trained models through the experiment's artifact store (devices and Ray executors).

        On for ``distributed`` processes, else off; ``MEDBENCH_SHARE_CHECKPOINTS`` decides when
        set. Nothing with ``--no-cache``.
        """
        from medbench.building.checkpoint_store import CheckpointStore, sharing_wanted

        if self.cache.enabled and self.cache.remote is None and sharing_wanted(distributed):
            self.cache.remote = CheckpointStore(self.tracker, notify=self.progress.message)

    def _prepare_surrogate(self) -> None:
        """Train (or fetch) the surrogate into the caches before the workers start (all need it)."""
        plan = self.plan
        if plan.surrogate is None or not self.cache.enabled:
            return
        if not self.rerun:
            finished = self.tracker.finished_cells(c.key for c in plan.cells)
            if all(c.key in finished for c in plan.cells):
                return
        surrogate = plan.surrogate
        self.progress.message(f"training the surrogate {surrogate.label} once for all workers")
        builder = self._builder(surrogate.model_name, surrogate.model, plan.spec.seed + 1, "surrogate ")
        builder.build(surrogate.chain)
        del builder
        if plan.device.type == "cuda":
            torch.cuda.empty_cache()  # leave this GPU's memory to the workers

    def groups(self) -> list[tuple[str, str]]:
        """The (model, defense) groups in the order the matrix runs them: one defended model each."""
        return [(model, defense) for model in self.plan.models for defense in self.plan.defenses]

    def _in_shard(self, cell: Cell) -> bool:
        if self.shard is None:
            return True
        index, count = self.shard
        return self.groups().index((cell.model, cell.defense)) % count == index

    # ------------------------------------------------------------------ defended models

    def _run_cells(self, todo: list[Cell]) -> None:
        plan = self.plan
        self.progress.start_matrix(len(todo))
        if not todo:
            return
        batches = plan_batches(plan, self._evaluator, self.progress.message)
        self._surrogate_estimator = self._build_surrogate()
        for model_name in plan.models:
            if not any(c.model == model_name for c in todo):
                continue
            builder = self._builder(model_name, plan.models[model_name], plan.spec.seed)
            evaluator = self._evaluator(model_name, plan.models[model_name])
            for defense_name, chain in plan.defenses.items():
                group = [c for c in todo if c.model == model_name and c.defense == defense_name]
                if group:
                    self._run_group(builder, evaluator, chain, group, batches)

    def _evaluator(self, model_name: str, model: Model) -> TaskEvaluator:
        plan = self.plan
        roi = model.roi_size()
        if plan.bundle.task == "classification":
            return ClassificationEvaluator(
                plan.bundle,
                plan.device,
                roi,
                plan.batch_size or CPU_EVAL_BATCH_SIZE,
                plan.spec.eot_samples,
                Acceleration.of(plan.spec),
            )
        if self._lpips is None:
            self._lpips = lpips_similarity(plan.device) if plan.dataset.dims == 3 else None
            if isinstance(self._lpips, str):
                self.progress.message(f"lpips_sim left out: {self._lpips}")
        lpips = None if isinstance(self._lpips, str) else self._lpips
        return SegmentationEvaluator(plan.bundle, plan.device, roi, lpips, Acceleration.of(plan.spec))

    def _build_surrogate(self) -> Any:
        """The estimator transfer attacks are crafted on, or None without ``--surrogate``."""
        surrogate = self.plan.surrogate
        if surrogate is None:
            return None
        self.progress.message(f"transfer attacks: crafting on the surrogate {surrogate.label}")
        builder = self._builder(surrogate.model_name, surrogate.model, self.plan.spec.seed + 1, "surrogate ")
        defended = builder.build(surrogate.chain)
        return self._evaluator(surrogate.model_name, surrogate.model).estimator(defended)

    def _builder(self, model_name: str, model: Model, seed: int, role: str = "") -> DefenseBuilder:
        plan = self.plan
        shown = f"{role}{model_name}"
        target = not role  # the surrogate is trained from its own weights, never a checkpoint
        return DefenseBuilder(
            dataset=plan.bundle,
            model_name=model_name,
            model=model,
            weights=plan.spec.weights,
            standard=self.host.registries.defenses.get(STANDARD_DEFENSE).configured(
                plan.spec.plugin_settings("defense", STANDARD_DEFENSE)
            ),
            training=plan.spec.training,
            device=plan.device,
            seed=seed,
            cache=self.cache,
            plugin_versions=plan.plugin_versions,
            checkpoint=plan.spec.checkpoint if target else None,
            normalization=parse_normalization(plan.spec.normalization),
            model_identity=plan.model_identities.get(model_name, {}) if target else {},
            on_epoch=lambda label: (
                lambda epoch, epochs, loss, acc: self.progress.training(
                    f"{shown}/{label}", epoch, epochs, loss, acc
                )
            ),
            on_cache_hit=lambda label: self.progress.message(f"{shown}/{label}: trained weights from cache"),
            on_trained=lambda label, history: self.progress.trained(f"{shown}/{label}", history),
        )

    def _run_group(
        self,
        builder: DefenseBuilder,
        evaluator: TaskEvaluator,
        chain: list[Defense],
        cells: list[Cell],
        batches: list[Batch],
    ) -> None:
        """Build one defended model, check its clean outputs, and run its cells."""
        bundle = self.plan.bundle
        try:
            defended = builder.build(chain)
            estimator = evaluator.estimator(defended)
            with frozen_parameters(defended):
                clean = evaluator.clean_outputs(estimator, batches)
            if not all(torch.isfinite(outputs.float()).all() for outputs in clean.outputs):
                raise CellError(
                    f"model {cells[0].model!r} with defense {cells[0].defense!r} "
                    "returned NaN or infinite logits on clean input"
                )
            check_output_shapes(clean, batches, cells[0], bundle.task, bundle.num_classes, bundle.multilabel)
        except (KeyboardInterrupt, UsageError):
            raise
        except (Exception, SystemExit) as error:  # plugin code calling sys.exit fails its cells only
            details = traceback.format_exc()
            for cell in cells:
                self._fail_cell(cell, f"building the defended model failed: {first_line(error)}", details)
            return
        with frozen_parameters(defended), tempfile.TemporaryDirectory() as directory:
            checks = self._group_checks(estimator, batches[0], cells[0])
            visuals = self._defense_images(chain, defended, batches[0][0], Path(directory))
            source = estimator if self._surrogate_estimator is None else self._surrogate_estimator
            seeds = {id(c): cell_seed(self.plan, c) for c in cells}
            shared = craft_shared_budgets(
                evaluator, source, self.plan.attacks, cells, batches, seeds, self.progress.message
            )
            for cell in cells:
                self._run_cell(
                    cell, evaluator, estimator, batches, clean, visuals, checks, shared.get(id(cell))
                )

    def _group_checks(self, estimator: Any, batch: Batch, cell: Cell) -> dict[str, float]:
        """:func:`~medbench.measuring.gradient_checks.group_checks` of one defended model.

        A failure is reported and skipped: checks never fail a cell.
        """
        bundle = self.plan.bundle
        try:
            return group_checks(estimator, *batch, task=bundle.task, multilabel=bundle.multilabel)
        except Exception as error:
            self.progress.message(
                f"{cell.model}/{cell.defense}: gradient checks skipped: {first_line(error)}"
            )
            return {}

    def _defense_images(
        self, chain: list[Defense], defended: DefendedModel, x: torch.Tensor, directory: Path
    ) -> list[Path]:
        """PNG files of what the defense's :meth:`~medbench.api.Defense.visualize` returns.

        A failure here is reported and skipped: pictures never fail a cell.
        """
        if not chain:
            return []
        try:
            with torch.no_grad():
                visuals = chain[0].visualize(defended, x[:8])
            return [image_rows(rows, directory / f"{name}.png") for name, rows in visuals.items()]
        except Exception as error:
            self.progress.message(f"defense {chain[0].name!r} could not draw its images: {first_line(error)}")
            return []

    # ------------------------------------------------------------------ cells

    def _run_cell(
        self,
        cell: Cell,
        evaluator: TaskEvaluator,
        estimator: Any,
        batches: list[Batch],
        clean: CleanOutputs,
        defense_images: list[Path],
        checks: dict[str, float],
        shared: SharedBatches | None = None,
    ) -> None:
        """Run one cell as a nested MLflow run: FINISHED with its metrics, or FAILED with its error."""
        plan = self.plan
        cell.run_id = self.tracker.start_run(
            cell.label, layout.cell_params(plan, cell), self._cell_tags(cell), plan.parent_run_id
        )
        self._hooks("before_cell", cell=cell)
        self.progress.start_cell(cell, len(batches))
        try:
            source = estimator if self._surrogate_estimator is None else self._surrogate_estimator
            run = attack_cell(
                cell,
                plan.attacks[cell.attack],
                evaluator,
                estimator,
                source,
                batches,
                clean,
                cell_seed(plan, cell),
                shared=shared,
                on_batch=self.progress.advance_cell,
                on_split=self._report_split,
            )
            metrics = run.metrics
            metrics.update(
                plugin_metrics(
                    plan.metrics, cell, plan.bundle.task, batches, run, clean.outputs, self.progress.message
                )
            )
            metrics.update(checks)
            self.tracker.log_metrics(cell.run_id, metrics)
            with tempfile.TemporaryDirectory() as directory:
                self.tracker.log_artifact(
                    cell.run_id, per_sample.save(run.samples, Path(directory) / per_sample.ARTIFACT)
                )
                grid = evaluator.examples(
                    batches[0],
                    run.adversarial[0],
                    clean.outputs[0],
                    run.attacked[0],
                    Path(directory) / layout.ARTIFACT_EXAMPLES,
                )
                self.tracker.log_artifact(cell.run_id, grid)
            for image in defense_images:
                self.tracker.log_artifact(cell.run_id, image, layout.ARTIFACT_DEFENSE_DIR)
            self.tracker.finish(cell.run_id, "FINISHED")
            result = CellResult(cell, "FINISHED", metrics, samples=run.samples)
        except KeyboardInterrupt:
            self.tracker.finish(cell.run_id, "KILLED")
            raise
        except (Exception, SystemExit) as error:  # plugin code calling sys.exit fails its cell only
            self.tracker.fail(cell.run_id, first_line(error), traceback.format_exc())
            result = CellResult(cell, "FAILED", error=first_line(error))
        self._record(result)

    def _report_split(self, label: str, size: int) -> None:
        self.progress.message(f"{label}: out of device memory on a batch of {size}; attacking it in halves")

    def _fail_cell(self, cell: Cell, error: str, details: str) -> None:
        cell.run_id = self.tracker.start_run(
            cell.label, layout.cell_params(self.plan, cell), self._cell_tags(cell), self.plan.parent_run_id
        )
        self.progress.start_cell(cell, 1)
        self.tracker.fail(cell.run_id, error, details)
        self._record(CellResult(cell, "FAILED", error=error))

    def _cell_tags(self, cell: Cell) -> dict[str, str]:
        return layout.cell_tags(self.plan, cell, self.shard)

    def _record(self, result: CellResult) -> None:
        self.results.append(result)
        self.progress.end_cell(result)
        self._hooks("after_cell", cell=result.cell, result=result)

    def _hooks(self, name: str, **kwargs: Any) -> None:
        for problem in self.host.call(name, **kwargs):
            self.progress.message(f"warning: {problem}")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True
