"""Running a benchmark script as a subprocess, as a user would, in a clean environment.

Imported by the tests of this folder (pytest puts the folder on ``sys.path``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
# a developer's plugin allow-list or tracking server must not leak into the scripts' runs
DROPPED_ENV = {
    "MEDBENCH_PLUGINS_ALLOW",
    "MEDBENCH_DISABLE_PLUGINS",
    "MEDBENCH_DISABLE_PLUGIN_AUTOLOAD",
    "MLFLOW_TRACKING_URI",
}


def script_env(directory: Path) -> dict[str, str]:
    """The environment of a script run: one thread, a model cache of its own."""
    env = {key: value for key, value in os.environ.items() if key not in DROPPED_ENV}
    env.update({"OMP_NUM_THREADS": "1", "MEDBENCH_CACHE_DIR": str(directory / "cache")})
    return env


@dataclass
class ScriptRun:
    """A finished script: its exit status, output, and the JSON it wrote (empty when none)."""

    returncode: int
    stdout: str
    stderr: str
    payload: dict[str, Any]


def run_script(script: str, *args: str, directory: Path, timeout: float) -> ScriptRun:
    """``python benchmarks/SCRIPT ARGS --json DIRECTORY/SCRIPT.json`` in ``directory``."""
    path = directory / f"{Path(script).stem}.json"
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args, "--json", str(path)],
        cwd=directory,
        env=script_env(directory),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    payload = json.loads(path.read_text()) if path.exists() else {}
    return ScriptRun(completed.returncode, completed.stdout, completed.stderr, payload)
