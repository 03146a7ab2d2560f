"""The devices and Ray executors: worker processes, defended-model groups dealt out.

``medbench run --executor devices --devices cuda:0,cuda:1`` plans the matrix and opens its
parent run in the coordinating process, then starts one ``medbench run`` worker per device
with ``--shard i/n --parent-run-id ID``. Worker ``i`` runs the (model, defense) groups
``i, i + n, ...`` (so that each defended model is trained by one worker only) and logs its
cells under the same parent run. When all workers have ended, the coordinator runs the
matrix once more: the resume logic finds every cell a worker finished and runs the rest
itself (the cells of a worker that crashed), then logs the summary, the sanity checks and
the curves. All executors therefore produce the same cells, keys and metrics.

Trained models are shared through the experiment's MLflow artifact store
(:mod:`medbench.building.checkpoint_store`): the process that trains a defended model uploads it, and a
process on another node (a Ray retry, the coordinator's final pass) downloads it instead of
training it again. The coordinator trains a ``--surrogate`` before starting the workers, so
that they all download it. A cell that FAILED in a worker runs once more in the coordinator's
final pass (only FINISHED cells are kept), so every cell ends up FINISHED at most once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

WORKER_OPTIONS_DROPPED = (
    "--executor",
    "--devices",
    "--ray-address",
    "--ray-cpus",
    "--device",
    "--tracking-uri",
    "--experiment",
)
"""Options with a value that the coordinator sets itself for its workers."""
WORKER_FLAGS_DROPPED = ("--json",)
FORWARDED_ENVIRONMENT = ("MEDBENCH_SHARE_CHECKPOINTS",)
"""Variables of the coordinator's environment that Ray workers get on every node."""


def worker_arguments(
    argv: Sequence[str],
    *,
    device: str,
    shard: tuple[int, int],
    parent_run_id: str,
    tracking_uri: str,
    experiment: str,
) -> list[str]:
    """The command line of one worker: the user's ``run`` arguments, re-targeted."""
    kept: list[str] = []
    skip = False
    for argument in argv:
        if skip:
            skip = False
            continue
        name = argument.split("=", 1)[0]
        if name in WORKER_OPTIONS_DROPPED:
            skip = "=" not in argument
            continue
        if argument in WORKER_FLAGS_DROPPED:
            continue
        kept.append(argument)
    index, count = shard
    return [
        *kept,
        "--device", device,
        "--shard", f"{index}/{count}",
        "--parent-run-id", parent_run_id,
        "--tracking-uri", tracking_uri,
        "--experiment", experiment,
    ]  # fmt: skip


def run_workers(
    argv: Sequence[str],
    devices: Sequence[str],
    *,
    parent_run_id: str,
    tracking_uri: str,
    experiment: str,
    console: Console,
) -> list[int]:
    """Start one worker per device, wait for all, and return their exit codes.

    A worker's output goes to a log file; the last lines of a worker that failed are shown.
    """
    processes = []
    with tempfile.TemporaryDirectory(prefix="medbench-workers-") as directory:
        for index, device in enumerate(devices):
            arguments = worker_arguments(
                argv,
                device=device,
                shard=(index, len(devices)),
                parent_run_id=parent_run_id,
                tracking_uri=tracking_uri,
                experiment=experiment,
            )
            log = Path(directory) / f"worker-{index + 1}.log"
            handle = log.open("w")
            processes.append(
                (
                    subprocess.Popen(
                        [sys.executable, "-m", "medbench", "run", *arguments],
                        stdout=handle,
                        stderr=subprocess.STDOUT,
                        env={**os.environ, "COLUMNS": "120"},
                    ),
                    handle,
                    log,
                )
            )
            console.print(
                f"worker {index + 1}/{len(devices)} on {device}: pid {processes[-1][0].pid}", markup=False
            )
        codes = []
        for number, (process, handle, log) in enumerate(processes, start=1):
            code = process.wait()
            handle.close()
            codes.append(code)
            if code not in (0, 1):
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-5:])
                console.print(
                    f"worker {number} ended with exit code {code}; its cells run here:\n{tail}", markup=False
                )
    return codes


class WorkerFailed(RuntimeError):
    """A worker process died (killed, crashed): Ray retries its task."""


def _ray_worker(command: list[str], environment: dict[str, str] | None = None) -> tuple[int, str]:
    """Run one worker process inside a Ray task; raise on a crash so that Ray retries the task.

    ``environment``: variables of the coordinator that the worker gets on whatever node it runs.
    """
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env={**os.environ, **(environment or {}), "COLUMNS": "120"},
        check=False,
    )
    tail = "\n".join((completed.stdout + completed.stderr).splitlines()[-5:])
    if completed.returncode not in (0, 1):  # 1: some cells FAILED, which is a result, not a crash
        raise WorkerFailed(f"worker exited with code {completed.returncode}: {tail}")
    return completed.returncode, tail


def run_on_ray(
    argv: Sequence[str],
    *,
    group_count: int,
    parent_run_id: str,
    tracking_uri: str,
    experiment: str,
    address: str | None,
    gpu: bool,
    retries: int,
    console: Console,
    num_cpus: int | None = None,
) -> list[int]:
    """One Ray task per defended-model group, each a worker process; return the exit codes.

    A task asks Ray for one GPU when ``gpu`` (Ray sets ``CUDA_VISIBLE_DEVICES`` for it, and the
    worker runs on ``cuda``), else one CPU. A task whose worker dies is retried up to
    ``retries`` times; the retry resumes the group (cells already FINISHED are kept, the
    interrupted one is closed as FAILED and runs again). Tasks that still fail leave their
    cells to the coordinator.
    """
    try:
        import ray
    except ImportError:
        from medbench.errors import UsageError

        raise UsageError(
            "--executor ray needs Ray: pip install 'medbench[ray]' (or pip install ray)"
        ) from None
    started_here = not ray.is_initialized() and address is None
    ray.init(
        address=address,
        num_cpus=num_cpus if address is None else None,
        ignore_reinit_error=True,
        include_dashboard=False,
        log_to_driver=False,
    )
    try:
        return _run_group_tasks(
            ray, argv, group_count, parent_run_id, tracking_uri, experiment, gpu, retries, console
        )
    finally:
        if started_here:
            ray.shutdown()


def _run_group_tasks(
    ray: Any,
    argv: Sequence[str],
    group_count: int,
    parent_run_id: str,
    tracking_uri: str,
    experiment: str,
    gpu: bool,
    retries: int,
    console: Console,
) -> list[int]:
    task = ray.remote(num_gpus=1 if gpu else 0, num_cpus=1, max_retries=retries, retry_exceptions=True)(
        _ray_worker
    )
    device = "cuda" if gpu else "cpu"
    forwarded = {name: os.environ[name] for name in FORWARDED_ENVIRONMENT if name in os.environ}
    futures = []
    for index in range(group_count):
        arguments = worker_arguments(
            argv,
            device=device,
            shard=(index, group_count),
            parent_run_id=parent_run_id,
            tracking_uri=tracking_uri,
            experiment=experiment,
        )
        futures.append(task.remote([sys.executable, "-m", "medbench", "run", *arguments], forwarded))
    console.print(f"ray: {group_count} group task(s) on {ray.cluster_resources()}", markup=False)
    codes = []
    for index, future in enumerate(futures, start=1):
        try:
            code, _ = ray.get(future)
        except Exception as error:  # retries exhausted: the coordinator runs the group's cells
            console.print(f"ray task {index} failed after {retries} retries: {error}", markup=False)
            code = 2
        codes.append(code)
    return codes
