"""A team's tracking server: PostgreSQL + `mlflow server` with proxied artifacts, two `medbench run` at once.

Starts a throw-away PostgreSQL cluster (Debian's `postgresql` package; as root the server runs as the
`postgres` user) on a free port of 127.0.0.1, an `mlflow server` on it with `--serve-artifacts`, and runs
two tiny matrices at the same time against `--tracking-uri http://127.0.0.1:PORT`. Everything each run
wrote must be readable back through the server: parent and cell runs FINISHED with their metrics, and the
artifacts (stored by the server, not by the clients) downloadable over HTTP. See docs/team-server.md.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

POSTGRES_MISSING = (
    "PostgreSQL's server binaries (initdb, postgres) not found: install Debian's postgresql package "
    "(apt-get install postgresql; .ci/run does when it can) to run the team tracking server test"
)
PSYCOPG2_MISSING = (
    "psycopg2 is not installed: pip install -e '.[test]' (psycopg2-binary) "
    "to run the team tracking server test"
)
TINY = [
    "--dataset", "phantom2d", "--model", "smallcnn", "--defense", "none", "--attack", "fgsm,gn",
    "--eps", "2/255,8/255", "--n-eval", "16", "--epochs", "1",
    "--set", "dataset.phantom2d.n_samples=200", "--set", "dataset.phantom2d.image_size=16",
]  # fmt: skip
CELLS = {f"smallcnn/none/{attack}@{eps}/255" for attack in ("fgsm", "gn") for eps in (2, 8)}
CELL_METRICS = {"clean_accuracy", "robust_accuracy", "attack_success_rate", "linf_max", "ssim_mean"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TEAMS = ("team-a", "team-b")


@dataclass
class TeamServer:
    url: str
    artifacts: Path  # the server's --artifacts-destination
    cache: Path  # medbench's model cache, shared by the test's runs as by the jobs of one machine
    logs: Path


def _postgres_bin() -> Path | None:
    """The newest `/usr/lib/postgresql/<version>/bin` (Debian), else the directory of `initdb` on PATH."""

    def version(path: str) -> tuple[int, ...]:
        parts = Path(path).parent.name.split(".")
        return tuple(int(part) for part in parts if part.isdigit())

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for directory in map(Path, candidates):
        if all(os.access(directory / name, os.X_OK) for name in ("initdb", "postgres")):
            return directory
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, characters: int = 3000) -> str:
    return path.read_text(errors="replace")[-characters:] if path.exists() else "(no log)"


def _stop(process: subprocess.Popen[bytes], first: int = signal.SIGTERM) -> None:
    """Signal the process group (the process was started in a new session), escalating to SIGKILL."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, first)
        process.wait(timeout=20)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=20)


def _start_postgres(stack: contextlib.ExitStack, bin_dir: Path, logs: Path, password: str) -> int:
    """initdb + postgres in a fresh directory under /tmp; returns the port.

    PostgreSQL refuses to run as root: as root the cluster belongs to the `postgres` user, in a directory
    of its own outside pytest's tmp_path (pytest's base directory is not traversable by other users).
    """
    user_options: dict[str, object] = {}
    owner: tuple[int, int] | None = None
    if os.geteuid() == 0:
        import pwd  # Unix only, like PostgreSQL's start-up here

        try:
            entry = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root without a `postgres` user to run PostgreSQL as")
        owner = (entry.pw_uid, entry.pw_gid)
        user_options = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    base = Path(tempfile.mkdtemp(prefix="medbench-postgres-"))
    stack.callback(shutil.rmtree, base, ignore_errors=True)
    password_file = base / "password"
    password_file.write_text(password + "\n")
    if owner is not None:
        for path in (base, password_file):
            os.chown(path, *owner)
    initdb = subprocess.run(
        [str(bin_dir / "initdb"), "-D", str(base / "data"), "-U", "medbench", "--auth=scram-sha-256",
         f"--pwfile={password_file}", "-E", "UTF8", "--no-locale", "--no-sync"],
        cwd=base, capture_output=True, text=True, timeout=120, check=False, **user_options,
    )  # fmt: skip
    assert initdb.returncode == 0, f"initdb failed: {initdb.stdout[-2000:]}{initdb.stderr[-2000:]}"
    port = _free_port()
    with open(logs / "postgres.log", "wb") as log:
        server = subprocess.Popen(
            [str(bin_dir / "postgres"), "-D", str(base / "data"), "-h", "127.0.0.1", "-p", str(port),
             "-k", str(base), "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off"],
            cwd=base, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **user_options,
        )  # fmt: skip
    stack.callback(_stop, server, signal.SIGINT)  # SIGINT: fast shutdown, not waiting for clients
    import psycopg2

    deadline = time.monotonic() + 60
    while True:
        if server.poll() is not None:
            pytest.fail(f"postgres exited early ({server.returncode}): {_tail(logs / 'postgres.log')}")
        try:
            connection = psycopg2.connect(
                host="127.0.0.1", port=port, user="medbench", password=password, dbname="postgres"
            )
            break
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                pytest.fail(f"postgres refused connections for 60 s: {_tail(logs / 'postgres.log')}")
            time.sleep(0.3)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("CREATE DATABASE mlflow")
    finally:
        connection.close()
    return port


def _wait_healthy(process: subprocess.Popen[bytes], url: str, log: Path, timeout: float = 150) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"mlflow server exited early ({process.returncode}): {_tail(log)}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.read().decode().strip() == "OK":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"mlflow server did not answer /health within {timeout:.0f} s: {_tail(log)}")


@pytest.fixture(scope="module")
def team_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TeamServer]:
    """PostgreSQL + `mlflow server --serve-artifacts` on free ports of 127.0.0.1, stopped afterwards."""
    pytest.importorskip("psycopg2", reason=PSYCOPG2_MISSING)
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip(POSTGRES_MISSING)
    work = tmp_path_factory.mktemp("team-server")
    logs = work / "logs"
    logs.mkdir()
    password = secrets.token_hex(12)
    with contextlib.ExitStack() as stack:
        pg_port = _start_postgres(stack, bin_dir, logs, password)
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        environment = {
            **os.environ,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # no job runner: faster start-up
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
        # `postgresql+psycopg2://`: SQLAlchemy >= 2.1 reads a bare `postgresql://` as psycopg (3)
        backend = f"postgresql+psycopg2://medbench:{password}@127.0.0.1:{pg_port}/mlflow"
        with open(logs / "mlflow.log", "wb") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
                 "--artifacts-destination", str(work / "artifacts"), "--serve-artifacts",
                 "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
                cwd=work, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        stack.callback(_stop, server)  # runs before postgres stops (ExitStack is last in, first out)
        _wait_healthy(server, url, logs / "mlflow.log")
        yield TeamServer(url=url, artifacts=work / "artifacts", cache=work / "cache", logs=logs)


def _medbench(server: TeamServer, args: list[str], out: Path) -> subprocess.Popen[bytes]:
    """Start `medbench run` on the tiny matrix against the server; stdout and stderr go to out.{out,err}."""
    environment = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MEDBENCH_CACHE_DIR": str(server.cache),
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    environment.pop("MLFLOW_TRACKING_URI", None)
    with open(out.with_suffix(".out"), "wb") as stdout, open(out.with_suffix(".err"), "wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "medbench", "run", *TINY, "--tracking-uri", server.url, *args],
            env=environment,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )


@pytest.mark.slow
def test_two_concurrent_runs_share_one_postgres_server(team_server: TeamServer, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    processes = {team: _medbench(team_server, ["--experiment", team], tmp_path / team) for team in TEAMS}
    try:
        for team, process in processes.items():
            code = process.wait(timeout=420)
            stderr = _tail((tmp_path / team).with_suffix(".err"))
            server_log = _tail(team_server.logs / "mlflow.log")
            assert code == 0, f"medbench run --experiment {team} exited {code}: {stderr}\n{server_log}"
    finally:
        for process in processes.values():
            _stop(process)

    client = MlflowClient(tracking_uri=team_server.url)
    downloads = tmp_path / "downloads"
    for team in TEAMS:
        experiment = client.get_experiment_by_name(team)
        assert experiment is not None, f"experiment {team} is not on the server"
        runs = client.search_runs([experiment.experiment_id], max_results=1000)
        parents = [run for run in runs if run.data.tags.get("medbench.role") == "matrix"]
        cells = [run for run in runs if run.data.tags.get("medbench.role") == "cell"]
        assert len(parents) == 1 and len(runs) == 1 + len(CELLS), f"{team}: {len(runs)} runs"
        parent = parents[0]
        assert parent.info.status == "FINISHED"
        assert parent.data.metrics.get("cells_finished") == len(CELLS)
        assert {run.data.tags["mlflow.runName"] for run in cells} == CELLS
        for cell in cells:
            label = cell.data.tags["mlflow.runName"]
            assert cell.info.status == "FINISHED", f"{team} {label}: {cell.info.status}"
            assert cell.data.tags.get("mlflow.parentRunId") == parent.info.run_id
            assert set(cell.data.metrics) >= CELL_METRICS, f"{team} {label}: {sorted(cell.data.metrics)}"
            assert cell.data.params["attack"] in {"fgsm", "gn"}
            # proxied artifacts: the clients upload through the server, which alone writes the store
            assert cell.info.artifact_uri.startswith("mlflow-artifacts:"), cell.info.artifact_uri
        # one cell's example grid and the parent's results, downloaded over HTTP
        png = Path(client.download_artifacts(cells[0].info.run_id, "examples.png", str(downloads / team)))
        assert png.read_bytes()[:8] == PNG_SIGNATURE, f"{png} is not a PNG"
        results = Path(client.download_artifacts(parent.info.run_id, "results.json", str(downloads / team)))
        document = json.loads(results.read_text())
        assert document["experiment"] == team and len(document["cells"]) == len(CELLS)
    # the files are in the server's --artifacts-destination: 4 grids per team
    assert len(list(team_server.artifacts.rglob("examples.png"))) == len(TEAMS) * len(CELLS)


@pytest.mark.slow
def test_json_output_stays_one_document_against_a_server(team_server: TeamServer, tmp_path: Path) -> None:
    process = _medbench(team_server, ["--experiment", "team-json", "--json"], tmp_path / "json")
    try:
        code = process.wait(timeout=420)
    finally:
        _stop(process)
    assert code == 0, _tail((tmp_path / "json").with_suffix(".err"))
    stdout = (tmp_path / "json").with_suffix(".out").read_text()
    document = json.loads(stdout)
    assert len(document["cells"]) == len(CELLS)


@pytest.mark.slow
def test_two_runs_may_create_the_same_experiment_at_once(
    team_server: TeamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both trackers look the new experiment up before either creates it (forced with a barrier)."""
    from mlflow.tracking import MlflowClient

    from medbench.recording.tracking import Tracker

    original = MlflowClient.get_experiment_by_name
    barrier = threading.Barrier(2, timeout=30)
    first_lookups = itertools.count()

    def lookup_then_wait(self: MlflowClient, name: str) -> object:
        found = original(self, name)
        if next(first_lookups) < 2:
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait()
        return found

    monkeypatch.setattr(MlflowClient, "get_experiment_by_name", lookup_then_wait)
    experiment_ids: list[str] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            experiment_ids.append(Tracker(team_server.url, "team-shared").experiment_id)
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for error in errors:
        if "RESOURCE_ALREADY_EXISTS" not in str(error):
            raise error
    assert not errors, f"a tracker failed: {errors[0]!r}"
    assert len(experiment_ids) == 2 and len(set(experiment_ids)) == 1
