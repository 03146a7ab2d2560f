"""On-disk cache of trained models, keyed by a hash of everything that defines them.

A second ``medbench run`` with the same dataset, model, defense, settings, training
settings and seed loads the weights instead of training again. Entries are written
atomically (temporary file, then rename), their SHA-256 is recorded in the JSON file beside
them and checked before reuse (a mismatch, a truncated or a foreign file is a cache miss:
the model is trained again), and they are read with ``torch.load(weights_only=True)``.
``MEDBENCH_CACHE_DIR`` sets the folder (default ``~/.cache/medbench``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

CACHE_ENV = "MEDBENCH_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$MEDBENCH_CACHE_DIR`` or ``~/.cache/medbench``."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "medbench"


def stable_hash(parts: Mapping[str, Any], length: int = 24) -> str:
    """Hex SHA-256 of a JSON rendering of ``parts`` with sorted keys."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


class ModelCache:
    """Trained weights by key, under ``<root>/models``."""

    def __init__(self, root: Path | None = None, enabled: bool = True) -> None:
        self.root = (root or default_cache_dir()) / "models"
        self.enabled = enabled

    def path(self, key: str) -> Path:
        return self.root / f"{key}.pt"

    def load(self, key: str) -> dict[str, dict[str, torch.Tensor]] | None:
        """The cached state dicts for ``key``, or None (also for an unreadable or altered entry)."""
        path = self.path(key)
        if not self.enabled or not path.is_file():
            return None
        try:
            recorded = json.loads((self.root / f"{key}.json").read_text(encoding="utf-8")).get("sha256")
        except (OSError, ValueError, AttributeError):
            recorded = None
        # entries written before hashes were recorded carry none; all newer ones are checked
        if recorded is not None and recorded != file_sha256(path):
            return None
        try:
            states = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a truncated or foreign file is a cache miss, not a crash
            return None
        return states if isinstance(states, dict) and "model" in states else None

    def save(
        self, key: str, states: Mapping[str, Mapping[str, torch.Tensor]], meta: Mapping[str, Any]
    ) -> None:
        """Write the entry and a JSON file describing what it was trained from."""
        if not self.enabled:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        cpu_states = {name: {k: v.detach().cpu() for k, v in sd.items()} for name, sd in states.items()}
        descriptor, temp_name = tempfile.mkstemp(dir=self.root, suffix=".tmp")
        os.close(descriptor)
        try:
            torch.save(cpu_states, temp_name)
            digest = file_sha256(Path(temp_name))
            _write_atomically(
                self.root / f"{key}.json",
                json.dumps({**meta, "sha256": digest}, indent=2, sort_keys=True, default=str),
            )
            os.replace(temp_name, self.path(key))
        finally:
            if os.path.exists(temp_name):
                os.unlink(temp_name)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_atomically(path: Path, text: str) -> None:
    descriptor, temp_name = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temp_name, path)
    finally:
        if os.path.exists(temp_name):
            os.unlink(temp_name)
