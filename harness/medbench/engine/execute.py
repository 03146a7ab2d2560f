"""Running a validated plan: :func:`run_matrix`, which ``medbench run`` and :func:`medbench.evaluate`
both call, on one process or dealt out to worker processes (the devices and Ray executors)."""

from __future__ import annotations

from dataclasses import dataclass, field

from medbench.building.cache import ModelCache
from medbench.engine.cells import CellResult, MatrixPlan, ProgressSink
from medbench.engine.runner import MatrixRunner
from medbench.errors import UsageError
from medbench.measuring.sanity import Flag
from medbench.plugins.host import PluginHost
from medbench.recording.tracking import Tracker

EXECUTORS = ("local", "devices", "ray")


@dataclass
class Execution:
    """How to run a plan, beyond what it computes.

    Attributes:
        tracking_uri: The MLflow store the runs are logged to.
        rerun: Run every cell again, also those already FINISHED in the store.
        use_cache: Load trained defended models from the model cache (and save them there).
        executor: ``local`` (this process), ``devices`` (a worker process per device) or ``ray``.
        devices: The devices executor's devices (``cuda:0``, ``cuda:1``...).
        ray_address: The Ray cluster to join (default: a local Ray instance).
        ray_cpus: CPUs of the local Ray instance.
        argv: The command line the workers of the devices and Ray executors run.
        shard: ``(i, n)`` when this process is worker ``i`` of ``n`` of the devices executor.
        parent_run_id: The coordinator's parent run, for a worker.
    """

    tracking_uri: str
    rerun: bool = False
    use_cache: bool = True
    executor: str = "local"
    devices: list[str] = field(default_factory=list)
    ray_address: str | None = None
    ray_cpus: int | None = None
    argv: list[str] = field(default_factory=list)
    shard: tuple[int, int] | None = None
    parent_run_id: str | None = None


@dataclass
class Outcome:
    """What :func:`run_matrix` returns: every cell's result, the sanity flags, where they are."""

    plan: MatrixPlan
    results: list[CellResult]
    flags: list[Flag]
    tracking_uri: str

    @property
    def failed(self) -> list[CellResult]:
        return [r for r in self.results if r.status != "FINISHED"]


def run_matrix(plan: MatrixPlan, host: PluginHost, execution: Execution, progress: ProgressSink) -> Outcome:
    """Run the plan's cells (resuming those the store holds) and log everything to MLflow.

    Raises:
        UsageError: On an unknown executor or one without its devices.
    """
    if execution.executor not in EXECUTORS:
        raise UsageError(f"unknown executor {execution.executor!r}; known: {', '.join(EXECUTORS)}")
    tracker = Tracker(execution.tracking_uri, plan.experiment)
    cache = ModelCache(enabled=execution.use_cache)
    if execution.shard is not None:  # a worker of the devices executor
        plan.parent_run_id = execution.parent_run_id
        worker = MatrixRunner(
            plan, host, tracker, progress, cache, rerun=execution.rerun, shard=execution.shard
        )
        return Outcome(plan, worker.run(), [], tracker.tracking_uri)
    runner = MatrixRunner(plan, host, tracker, progress, cache, rerun=execution.rerun)
    if execution.executor != "local":
        _run_workers(runner, execution, tracker)
        runner.rerun = False  # keep what the workers just finished
    results = runner.run()
    return Outcome(plan, results, runner.flags, tracker.tracking_uri)


def _run_workers(runner: MatrixRunner, execution: Execution, tracker: Tracker) -> None:
    """Deal the defended-model groups out to worker processes, under one parent run."""
    from rich.console import Console

    from medbench.engine import executors

    plan = runner.plan
    console = Console(stderr=True)
    if execution.executor == "devices":
        if not execution.devices:
            raise UsageError("--executor devices needs --devices, e.g. --devices cuda:0,cuda:1")
        executors.run_workers(
            execution.argv,
            execution.devices,
            parent_run_id=runner.start_parent_run(),
            tracking_uri=tracker.tracking_uri,
            experiment=plan.experiment,
            console=console,
        )
        return
    executors.run_on_ray(
        execution.argv,
        group_count=len(runner.groups()),
        parent_run_id=runner.start_parent_run(),
        tracking_uri=tracker.tracking_uri,
        experiment=plan.experiment,
        address=execution.ray_address,
        num_cpus=execution.ray_cpus,
        gpu=plan.device.type == "cuda",
        retries=2,
        console=console,
    )
