"""The devices executor: one worker process per device, defended-model groups dealt out.

``medbench run --executor devices --devices cuda:0,cuda:1`` plans the matrix and opens its
parent run in the coordinating process, then starts one ``medbench run`` worker per device
with ``--shard i/n --parent-run-id ID``. Worker ``i`` runs the (model, defense) groups
``i, i + n, ...`` (so that each defended model is trained by one worker only) and logs its
cells under the same parent run. When all workers have ended, the coordinator runs the
matrix once more: the resume logic finds every cell a worker finished and runs the rest
itself (the cells of a worker that crashed), then logs the summary, the sanity checks and
the curves. All executors therefore produce the same cells, keys and metrics.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

WORKER_OPTIONS_DROPPED = ("--executor", "--devices", "--device", "--tracking-uri", "--experiment")
"""Options with a value that the coordinator sets itself for its workers."""
WORKER_FLAGS_DROPPED = ("--json",)


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
