"""Trained checkpoints shared through the MLflow artifact store, and the coordinator's retry of FAILED cells.

Every process here has its own model cache (``MEDBENCH_CACHE_DIR``), as on separate nodes: what one
process trained must reach the others through the artifact store, checked by its SHA-256.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from mlflow.tracking import MlflowClient

import medbench.building.defending
import medbench.engine.executors
from medbench.building.cache import ModelCache, file_sha256, stable_hash
from medbench.building.checkpoint_store import (
    SHARE_ENV,
    CheckpointIntegrityError,
    CheckpointStore,
    sharing_wanted,
)
from medbench.cli import main
from medbench.recording.tracking import Tracker

TINY = [
    "--dataset", "phantom2d", "--model", "smallcnn", "--attack", "fgsm,gn", "--eps", "8/255",
    "--n-eval", "16", "--epochs", "1", "--experiment", "smoke",
    "--set", "dataset.phantom2d.n_samples=200", "--set", "dataset.phantom2d.image_size=16",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _artifacts_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A SQLite store's default artifact root is ./mlruns: keep it in the test's folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(SHARE_ENV, raising=False)


def _states(seed: int) -> dict[str, dict[str, torch.Tensor]]:
    torch.manual_seed(seed)
    return {"model": torch.nn.Linear(4, 2).state_dict()}


def _store(uri: str) -> CheckpointStore:
    return CheckpointStore(Tracker(uri, "checkpoints-test"))


def _only_version(store: CheckpointStore, key: str) -> tuple[str, str]:
    versions = store.versions(key)
    assert len(versions) == 1, versions
    return versions[0]


def test_a_trained_checkpoint_is_uploaded_once_and_a_fresh_cache_downloads_it(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    key = stable_hash({"what": "shared"})
    trainer = _store(uri)
    first = ModelCache(tmp_path / "node-a", remote=trainer)
    assert first.load(key) is None, "nothing anywhere yet: train"
    first.save(key, _states(0), {"model": "linear"})
    assert trainer.uploaded == [key]

    run_id, folder = _only_version(trainer, key)
    run = trainer.client.get_run(run_id)
    assert run.data.tags["medbench.role"] == "checkpoints" and run.info.status == "FINISHED"
    digest = file_sha256(first.path(key))
    assert folder == f"checkpoints/{key}/{digest}"
    shared_meta = json.loads(
        Path(trainer.client.download_artifacts(run_id, f"{folder}/meta.json", str(tmp_path))).read_text()
    )
    assert shared_meta["sha256"] == digest and shared_meta["model"] == "linear"

    racing = ModelCache(tmp_path / "node-c", remote=_store(uri))
    racing.save(key, _states(1), {"model": "linear"})  # a second trainer of the same model
    assert racing.remote is not None and not racing.remote.uploaded, "a key already shared is not uploaded"
    assert _only_version(trainer, key) == (run_id, folder)

    reader = _store(uri)
    fresh = ModelCache(tmp_path / "node-b", remote=reader)
    states = fresh.load(key)
    assert states is not None and reader.fetched == [key], "downloaded instead of trained"
    assert all(
        torch.equal(a, b) for a, b in zip(states["model"].values(), _states(0)["model"].values(), strict=True)
    )
    meta = json.loads(fresh.meta_path(key).read_text())
    assert meta["sha256"] == digest == file_sha256(fresh.path(key))
    assert meta["downloaded_from"] == {"run_id": run_id, "artifact_path": f"{folder}/model.pt"}
    assert not list(tmp_path.rglob("*.tmp")), "no temporary file or folder is left behind"

    bypassed = _store(uri)
    assert ModelCache(tmp_path / "node-d", enabled=False, remote=bypassed).load(key) is None
    assert not bypassed.fetched and not (tmp_path / "node-d").exists(), "--no-cache bypasses the store"


def test_a_model_cached_before_sharing_is_shared_when_next_used(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    key = stable_hash({"what": "cached earlier"})
    cache = ModelCache(tmp_path / "node-a")
    cache.save(key, _states(0), {"model": "linear"})
    store = _store(uri)
    cache.remote = store
    assert cache.load(key) is not None and store.uploaded == [key]
    _, folder = _only_version(store, key)
    assert folder == f"checkpoints/{key}/{file_sha256(cache.path(key))}"
    assert cache.load(key) is not None and store.uploaded == [key], "uploaded once"
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_corrupt_shared_checkpoint_is_refused(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    key = stable_hash({"what": "corrupt"})
    ModelCache(tmp_path / "node-a", remote=_store(uri)).save(key, _states(0), {"model": "linear"})
    reader = _store(uri)
    _, folder = _only_version(reader, key)
    (stored,) = (tmp_path / "mlruns").rglob("model.pt")  # the artifact store's own file
    assert stored.as_posix().endswith(f"{folder}/model.pt")
    torch.save(_states(1), stored)  # a valid checkpoint, but not the one the hash was recorded for

    fresh = ModelCache(tmp_path / "node-b", remote=reader)
    with pytest.raises(CheckpointIntegrityError, match=rf"shared checkpoint {key} is corrupt.*SHA-256"):
        fresh.load(key)
    assert not fresh.path(key).exists() and not reader.fetched, "nothing installed"


def test_sharing_is_on_for_distributed_runs_unless_the_environment_says_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert sharing_wanted(distributed=True) and not sharing_wanted(distributed=False)
    monkeypatch.setenv(SHARE_ENV, "1")
    assert sharing_wanted(distributed=False)
    monkeypatch.setenv(SHARE_ENV, "0")
    assert not sharing_wanted(distributed=True)


def _cells(uri: str, experiment: str) -> list[Any]:
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    runs = client.search_runs([found.experiment_id], max_results=1000)
    return [r for r in runs if r.data.tags.get("medbench.role") == "cell"]


def test_each_model_is_trained_once_across_nodes_and_a_failed_cell_is_retried_by_the_coordinator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The devices executor's protocol, its workers in this process, each with a cache of its own.

    The coordinator trains the surrogate; each worker downloads it and trains its own group's model;
    worker 2's ``gn`` cell fails; the coordinator's final pass runs that cell again and downloads the
    model worker 2 trained instead of training it.
    """
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    events: list[str] = []
    real_train = medbench.building.defending.train_defended

    def counted_train(*args: Any, **kwargs: Any) -> Any:
        events.append(f"train in {Path(os.environ['MEDBENCH_CACHE_DIR']).name}")
        return real_train(*args, **kwargs)

    monkeypatch.setattr(medbench.building.defending, "train_defended", counted_train)
    monkeypatch.setenv("MEDBENCH_CACHE_DIR", str(tmp_path / "coordinator"))

    def in_process_workers(argv: list[str], devices: list[str], **options: Any) -> list[int]:
        options.pop("console")
        codes = []
        for index, device in enumerate(devices):
            arguments = medbench.engine.executors.worker_arguments(
                argv, device=device, shard=(index, len(devices)), **options
            )
            with monkeypatch.context() as node:
                node.setenv("MEDBENCH_CACHE_DIR", str(tmp_path / f"worker-{index + 1}"))
                if index == 1:
                    from medbench_art.gn import GaussianNoise

                    def broken(*args: Any, **kwargs: Any) -> Any:
                        raise RuntimeError("injected failure in worker 2")

                    node.setattr(GaussianNoise, "generate", broken)
                events.append(f"worker {index + 1}")
                with pytest.raises(SystemExit) as exit_info:
                    main(["run", *arguments])
                codes.append(int(exit_info.value.code or 0))
        events.append("final pass")
        return codes

    monkeypatch.setattr(medbench.engine.executors, "run_workers", in_process_workers)
    command = [*TINY, "--defense", "none,gaussian-augmentation", "--surrogate", "smallcnn:none"]
    with pytest.raises(SystemExit) as exit_info:
        main(["run", *command, "--executor", "devices", "--devices", "cpu,cpu", "--tracking-uri", uri])
    assert exit_info.value.code in (0, None)

    assert events == [
        "train in coordinator",  # the surrogate, once, before the workers
        "worker 1",
        "train in worker-1",  # smallcnn/none (the surrogate came from the store)
        "worker 2",
        "train in worker-2",  # smallcnn/gaussian-augmentation
        "final pass",  # nothing trained: worker 2's model came from the store
    ], events

    def downloaded(cache: str) -> set[str]:
        metas = (json.loads(p.read_text()) for p in (tmp_path / cache / "models").glob("*.json"))
        return {meta["chain"][0]["name"] for meta in metas if "downloaded_from" in meta}

    assert downloaded("worker-1") == downloaded("worker-2") == {"none"}, "the surrogate"
    assert downloaded("coordinator") == {"gaussian-augmentation"}

    cells = _cells(uri, "smoke")
    finished = [r.data.tags["mlflow.runName"] for r in cells if r.info.status == "FINISHED"]
    assert sorted(finished) == sorted(set(finished)) and len(finished) == 4, "each cell FINISHED once"
    failed = [r for r in cells if r.info.status == "FAILED"]
    assert [(r.data.tags["mlflow.runName"], r.data.tags["medbench.worker"]) for r in failed] == [
        ("smallcnn/gaussian-augmentation/gn@8/255", "2/2")
    ]
    assert "injected failure in worker 2" in failed[0].data.tags["medbench.error"]
    retried = next(r for r in cells if r.info.status == "FINISHED" and r.data.tags["mlflow.runName"] == (
        "smallcnn/gaussian-augmentation/gn@8/255"
    ))  # fmt: skip
    assert "medbench.worker" not in retried.data.tags, "run again by the coordinator"


def test_the_local_executor_shares_nothing_unless_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    single = [*TINY, "--defense", "none", "--attack", "gn", "--tracking-uri", uri]
    for extra in ([], ["--no-cache"]):
        monkeypatch.setenv(SHARE_ENV, "1" if extra else "")
        with pytest.raises(SystemExit):
            main(["run", *single, "--experiment", f"local{len(extra)}", *extra])
    monkeypatch.setenv(SHARE_ENV, "1")
    monkeypatch.setenv("MEDBENCH_CACHE_DIR", str(tmp_path / "other"))
    with pytest.raises(SystemExit):
        main(["run", *single, "--experiment", "shared"])
    client = MlflowClient(tracking_uri=uri)
    roles = {
        name: {
            run.data.tags.get("medbench.role")
            for run in client.search_runs([client.get_experiment_by_name(name).experiment_id])  # type: ignore[union-attr]
        }
        for name in ("local0", "local1", "shared")
    }
    assert roles == {
        "local0": {"matrix", "cell"},
        "local1": {"matrix", "cell"},
        "shared": {"matrix", "cell", "checkpoints"},
    }
    assert "uploaded to the artifact store" in capsys.readouterr().err


# ---------------------------------------------------------------------- a server with proxied artifacts


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _mlflow_server(work: Path) -> Iterator[str]:
    """``mlflow server --serve-artifacts`` on a SQLite store, on a free port; stopped afterwards."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = work / "mlflow.log"
    backend = f"sqlite:///{work / 'server.db'}"
    environment = {
        **os.environ,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    with log.open("wb") as handle:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
             "--artifacts-destination", str(work / "served"), "--serve-artifacts",
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            cwd=work, env=environment, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 150
        while True:
            if server.poll() is not None:
                pytest.fail(f"mlflow server exited: {log.read_text(errors='replace')[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=20)


@pytest.mark.slow
def test_checkpoints_travel_through_a_server_with_proxied_artifacts(tmp_path: Path) -> None:
    with _mlflow_server(tmp_path) as url:
        key = stable_hash({"what": "served"})
        trainer = _store(url)
        ModelCache(tmp_path / "node-a", remote=trainer).save(key, _states(0), {"model": "linear"})
        run_id, folder = _only_version(trainer, key)
        assert trainer.client.get_run(run_id).info.artifact_uri.startswith("mlflow-artifacts:")
        served = list((tmp_path / "served").rglob("model.pt"))
        assert len(served) == 1 and folder in served[0].as_posix(), "stored by the server"

        reader = _store(url)
        fresh = ModelCache(tmp_path / "node-b", remote=reader)
        assert fresh.load(key) is not None and reader.fetched == [key]
        assert file_sha256(fresh.path(key)) == file_sha256(tmp_path / "node-a" / "models" / f"{key}.pt")

        torch.save(_states(1), served[0])
        with pytest.raises(CheckpointIntegrityError, match="is corrupt"):
            ModelCache(tmp_path / "node-c", remote=_store(url)).load(key)
