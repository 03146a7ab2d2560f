"""What can change a number besides the settings: library versions, the device, the source commit.

Every parent run and every cell records them as ``medbench.env.<name>`` tags
(:func:`environment_tags`); leaderboard entries carry them (``environment``), so that a rerun
that disagrees can be traced to a library build rather than guessed at.
"""

from __future__ import annotations

import platform
import subprocess
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

TAG_PREFIX = "medbench.env."
LIBRARIES = {
    "torch": "torch",
    "torchvision": "torchvision",
    "art": "adversarial-robustness-toolbox",
    "monai": "monai",
    "numpy": "numpy",
    "mlflow": "mlflow",
    "scipy": "scipy",
}
"""Recorded library versions: the name on entries, and the distribution it is read from."""


def _version(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "not installed"


def source_commit() -> str:
    """The git commit of the source tree medbench runs from (an editable install), else ``unknown``.

    A working tree with uncommitted changes says so (``<sha>+dirty``).
    """
    root = Path(__file__).resolve().parents[3]
    if not (root / ".git").exists():
        return "unknown"
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}+dirty" if dirty else sha


@lru_cache(maxsize=1)
def environment() -> dict[str, str]:
    """``python``, the :data:`LIBRARIES`, ``medbench``, ``commit`` and ``platform``, as strings."""
    from medbench import __version__

    found = {"python": platform.python_version()}
    found.update({name: _version(distribution) for name, distribution in LIBRARIES.items()})
    found["medbench"] = __version__
    found["commit"] = source_commit()
    found["platform"] = f"{platform.system()} {platform.machine()}"
    return found


def environment_tags() -> dict[str, str]:
    """The environment as MLflow tags, ``medbench.env.torch`` and so on."""
    return {f"{TAG_PREFIX}{name}": value for name, value in environment().items()}


def environment_of(tags: dict[str, str]) -> dict[str, str]:
    """The environment a run recorded, read back from its tags (empty for older runs)."""
    return {key.removeprefix(TAG_PREFIX): value for key, value in tags.items() if key.startswith(TAG_PREFIX)}
