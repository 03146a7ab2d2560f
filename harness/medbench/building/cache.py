"""On-disk cache of trained models, keyed by a hash of everything that defines them.

A second ``medbench run`` with the same dataset, model, defense, settings, training
settings and seed loads the weights instead of training again. Entries are written
atomically (temporary file, then rename), their SHA-256 is recorded in the JSON file beside
them and checked before reuse (a mismatch, a truncated or a foreign file is a cache miss:
the model is trained again), and they are read with ``torch.load(weights_only=True)``.
``MEDBENCH_CACHE_DIR`` sets the folder (default ``~/.cache/medbench``).

A cache may have a ``remote`` (:class:`medbench.building.checkpoint_store.CheckpointStore`, the MLflow
artifact store of the experiment): a local miss then asks it before training, and an entry
it lacks (newly saved, or found locally) is uploaded to it, so that the processes of one
matrix on other nodes (the devices and Ray executors) train each model once. A disabled cache
(``--no-cache``) uses neither.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

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


class RemoteCheckpoints(Protocol):
    """Where a cache shares its entries beyond this machine (:mod:`medbench.building.checkpoint_store`)."""

    def fetch(self, key: str, cache: ModelCache) -> bool:
        """Install the shared entry of ``key`` in ``cache``; False when there is none."""

    def has(self, key: str) -> bool:
        """Whether an entry of ``key`` is shared already (True also when that cannot be told)."""

    def upload(self, key: str, weights: Path, meta: Path) -> None:
        """Share an entry: its weights file and its JSON description (with ``sha256``)."""


WEIGHTS_FILE = "model.pt"
META_FILE = "meta.json"


class ModelCache:
    """Trained weights by key, under ``<root>/models``."""

    def __init__(
        self, root: Path | None = None, enabled: bool = True, remote: RemoteCheckpoints | None = None
    ) -> None:
        self.root = (root or default_cache_dir()) / "models"
        self.enabled = enabled
        self.remote = remote
        """Shared checkpoints asked on a local miss and given every new entry (None: this machine only)."""

    def path(self, key: str) -> Path:
        return self.root / f"{key}.pt"

    def meta_path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def load(self, key: str) -> dict[str, dict[str, torch.Tensor]] | None:
        """The cached state dicts for ``key``, or None (also for an unreadable or altered entry).

        On a local miss, the ``remote`` store's entry is downloaded, checked and installed
        first (:class:`medbench.building.checkpoint_store.CheckpointIntegrityError` when its hash differs);
        a local hit that the ``remote`` store lacks (trained before sharing was on) is uploaded.
        """
        if not self.enabled:
            return None
        states = self._load_local(key)
        if self.remote is None:
            return states
        if states is None:
            if self.remote.fetch(key, self):
                states = self._load_local(key)
        elif not self.remote.has(key):
            self._share_entry(key)
        return states

    def _share_entry(self, key: str) -> None:
        """Upload a snapshot of the local entry of ``key``, if it still matches its recorded hash."""
        assert self.remote is not None
        upload = Path(tempfile.mkdtemp(dir=self.root, suffix=".tmp"))
        try:
            weights = upload / WEIGHTS_FILE
            _link_or_copy(self.path(key), weights)
            digest = file_sha256(weights)
            try:
                meta = json.loads(self.meta_path(key).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                meta = {}
            if not isinstance(meta, dict) or meta.setdefault("sha256", digest) != digest:
                return  # replaced by another process meanwhile: that one shares its own
            (upload / META_FILE).write_text(
                json.dumps(meta, indent=2, sort_keys=True, default=str), encoding="utf-8"
            )
            self.remote.upload(key, weights, upload / META_FILE)
        except OSError:
            return  # the entry vanished meanwhile
        finally:
            shutil.rmtree(upload, ignore_errors=True)

    def _load_local(self, key: str) -> dict[str, dict[str, torch.Tensor]] | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            recorded = json.loads(self.meta_path(key).read_text(encoding="utf-8")).get("sha256")
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
        """Write the entry and a JSON file describing what it was trained from; share it with ``remote``."""
        if not self.enabled:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        cpu_states = {name: {k: v.detach().cpu() for k, v in sd.items()} for name, sd in states.items()}
        descriptor, temp_name = tempfile.mkstemp(dir=self.root, suffix=".tmp")
        os.close(descriptor)
        upload = Path(tempfile.mkdtemp(dir=self.root, suffix=".tmp")) if self.remote is not None else None
        try:
            torch.save(cpu_states, temp_name)
            digest = file_sha256(Path(temp_name))
            text = json.dumps({**meta, "sha256": digest}, indent=2, sort_keys=True, default=str)
            if upload is not None:
                # a snapshot of exactly these bytes: another process may replace the entry meanwhile
                _link_or_copy(Path(temp_name), upload / WEIGHTS_FILE)
                (upload / META_FILE).write_text(text, encoding="utf-8")
            _write_atomically(self.meta_path(key), text)
            os.replace(temp_name, self.path(key))
            if upload is not None and self.remote is not None:
                self.remote.upload(key, upload / WEIGHTS_FILE, upload / META_FILE)
        finally:
            if os.path.exists(temp_name):
                os.unlink(temp_name)
            if upload is not None:
                shutil.rmtree(upload, ignore_errors=True)

    def install(self, key: str, weights: Path, meta: Mapping[str, Any]) -> None:
        """Move a downloaded, already checked weights file into the cache with its JSON description.

        ``weights`` must lie on the cache's file system (it is renamed into place).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        _write_atomically(self.meta_path(key), json.dumps(dict(meta), indent=2, sort_keys=True, default=str))
        os.replace(weights, self.path(key))


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # a file system without hard links
        shutil.copyfile(source, target)


def _write_atomically(path: Path, text: str) -> None:
    descriptor, temp_name = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temp_name, path)
    finally:
        if os.path.exists(temp_name):
            os.unlink(temp_name)
