"""`medbench ui` in a real browser: a tiny `medbench run` is visible and comparable in MLflow's UI.

Headless Chromium (Debian's `chromium` package) renders the React single-page app; the test reads the
DOM after the app fetched its data (`--dump-dom`) and saves screenshots (`--screenshot`) as test
artifacts, in $MEDBENCH_TEST_ARTIFACTS when set, else in the test's tmp_path. No Python browser driver.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest

from medbench.cli import main

CHROMIUM_MISSING = (
    "headless Chromium not found: install Debian's chromium package (apt-get install chromium) "
    "to run the MLflow UI browser test"
)
# The machine may have no internet: without these flags Chromium keeps retrying refused connections.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
]
# Virtual time budgets (ms) of successive attempts: virtual time stands still while requests to the MLflow
# server are pending and runs ahead while the page is idle, so a larger budget costs little real time.
BUDGETS_MS = (10_000, 25_000, 60_000)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chromium() -> str | None:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _TextNodes(HTMLParser):
    """The visible text of a DOM dump, one stripped string per text node, in document order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.texts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip and data.strip():
            self.texts.append(data.strip())


def _texts(dom: str) -> list[str]:
    parser = _TextNodes()
    parser.feed(dom)
    parser.close()
    return parser.texts


def _format_metric(value: float) -> str:
    """MLflow UI's `Utils.formatMetric` (JavaScript) in Python, for values in the comparison table."""
    if value == 0:
        return "0"
    if abs(value) < 1e-3:
        mantissa, exponent = f"{value:.3e}".split("e")
        return f"{mantissa}e{int(exponent):+d}"
    scale = 1000 if abs(value) < 10 else 100 if abs(value) < 100 else 10
    rounded = math.floor(value * scale + 0.5) / scale  # JavaScript's Math.round rounds halves up
    return str(int(rounded)) if rounded.is_integer() else repr(rounded)


def _browse(chromium: str, profile: Path, budget_ms: int, window: tuple[int, int], *args: str) -> str:
    """One headless Chromium run with a fresh profile; returns its stdout."""
    shutil.rmtree(profile, ignore_errors=True)
    command = [
        chromium,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        f"--window-size={window[0]},{window[1]}",
        f"--virtual-time-budget={budget_ms}",
        *args,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, f"chromium failed ({result.returncode}): {result.stderr[-3000:]}"
    return result.stdout


def _capture(
    chromium: str, profile: Path, url: str, expected: list[str], png: Path, window: tuple[int, int]
) -> list[str]:
    """Render `url` once every `expected` text is on it (retrying with more virtual time), screenshot it
    to `png`, and return the text nodes of the rendered DOM."""
    texts: list[str] = []
    for budget in BUDGETS_MS:
        png.unlink(missing_ok=True)
        dom = _browse(chromium, profile, budget, window, "--dump-dom", f"--screenshot={png}", url)
        texts = _texts(dom)
        page = "\n".join(texts)
        if all(text in page for text in expected):
            break
    else:
        missing = [text for text in expected if text not in "\n".join(texts)]
        pytest.fail(f"{url} never showed {missing}; rendered text: {' | '.join(texts)[:4000]}")
    data = png.read_bytes() if png.exists() else b""
    assert data[:8] == PNG_SIGNATURE, f"{png} is not a PNG"
    assert struct.unpack(">II", data[16:24]) == window, f"{png} has the wrong size"
    # A blank page compresses to a few KB; the rendered MLflow pages are 100 KB or more.
    assert len(data) > 10_000, f"{png} is only {len(data)} bytes: nothing rendered?"
    return texts


def _wait_healthy(process: subprocess.Popen[str], port: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"medbench ui exited early: {process.stdout.read() if process.stdout else ''}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.read().decode().strip() == "OK":
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail("medbench ui did not answer /health within 120 s")


def _stop(process: subprocess.Popen[str]) -> None:
    try:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.wait(timeout=30)


@pytest.mark.slow
def test_ui_shows_and_compares_the_runs_of_a_matrix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chromium = _chromium()
    if chromium is None:
        pytest.skip(CHROMIUM_MISSING)
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")  # no usage reports from the run or the UI
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(SystemExit) as done:
        main(
            [
                "run",
                "--dataset",
                "phantom2d",
                "--model",
                "smallcnn",
                "--defense",
                "none",
                "--attack",
                "fgsm,gn",
                "--eps",
                "8/255",
                "--n-eval",
                "16",
                "--epochs",
                "1",
                "--set",
                "dataset.phantom2d.n_samples=200",
                "--set",
                "dataset.phantom2d.image_size=16",
                "--tracking-uri",
                uri,
                "--experiment",
                "ui-browser",
            ]
        )
    assert done.value.code == 0

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("ui-browser")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    parents = [run for run in runs if run.data.tags.get("medbench.role") == "matrix"]
    cells = sorted(
        (run for run in runs if run.data.tags.get("medbench.role") == "cell"),
        key=lambda run: run.data.tags["mlflow.runName"],
    )
    assert len(parents) == 1 and len(cells) == 2
    parent_name = parents[0].data.tags["mlflow.runName"]
    cell_names = [run.data.tags["mlflow.runName"] for run in cells]
    assert all(run.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id for run in cells)

    artifacts = Path(os.environ.get("MEDBENCH_TEST_ARTIFACTS") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)
    profile = tmp_path / "chromium-profile"
    port = _free_port()
    base = f"http://127.0.0.1:{port}/"
    process = subprocess.Popen(
        [sys.executable, "-m", "medbench", "ui", "--port", str(port), "--tracking-uri", uri],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # MLflow's background job runner (GenAI jobs, 8 processes) plays no part in these pages.
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        start_new_session=True,
    )
    try:
        _wait_healthy(process, port)
        # 1. The experiment's runs page. Sorted by start time (the default) MLflow nests the cells under
        # a collapsed parent row and fetches only top-level runs; any other sort order lists every run
        # flat (MLflow's `shouldFetchParents`), so sort by run name to see the parent and both cells.
        query = urllib.parse.urlencode({"orderByKey": "tags.`mlflow.runName`", "orderByAsc": "true"})
        runs_url = f"{base}#/experiments/{experiment.experiment_id}/runs?{query}"
        expected = [experiment.name, parent_name, *cell_names]
        _capture(chromium, profile, runs_url, expected, artifacts / "mlflow-ui-runs.png", (1600, 1000))

        # 2. The comparison view of the two cells: its metrics table has a column of metric names, then
        # one cell per metric and run, row by row, the runs in the order of the `runs` parameter.
        query = urllib.parse.urlencode(
            {
                "runs": json.dumps([run.info.run_id for run in cells]),
                "experiments": json.dumps([experiment.experiment_id]),
            },
            quote_via=urllib.parse.quote,
        )
        compare_url = f"{base}#/compare-runs?{query}"
        metric_keys = set(cells[0].data.metrics) | set(cells[1].data.metrics)
        robust = [_format_metric(run.data.metrics["robust_accuracy"]) for run in cells]
        # The metrics table is virtualised (only the columns that fit are in the DOM): hence a wide
        # window, and a tall one so that the screenshot reaches the table below the parameters.
        png = artifacts / "mlflow-ui-compare-runs.png"
        expected = ["Metrics", *cell_names, "robust_accuracy"]
        texts = _capture(chromium, profile, compare_url, expected, png, (1600, 2200))
        start = texts.index("Metrics", texts.index("Parameters"))  # the section heading, not "Metrics:"
        first = next(i for i in range(start, len(texts)) if texts[i] in metric_keys)
        end = first
        while end < len(texts) and texts[end] in metric_keys:
            end += 1
        names = texts[first:end]
        assert "robust_accuracy" in names, f"no robust_accuracy row: {texts[start : start + 60]}"
        values = texts[end : end + 2 * len(names)]
        row = names.index("robust_accuracy")
        assert values[2 * row : 2 * row + 2] == robust, (
            f"robust_accuracy row shows {values[2 * row : 2 * row + 2]}, expected {robust}; "
            f"metrics table: {names} {values}"
        )

        # 3. The metrics table scrolls inside the comparison view, so the robust_accuracy row may be out
        # of the screenshot's sight: also capture the metric's page that the row links to, which lists
        # the metric of both runs (and plots it).
        query = urllib.parse.urlencode(
            {
                "runs": json.dumps([run.info.run_id for run in cells]),
                "metric": json.dumps("robust_accuracy"),
                "experiments": json.dumps([experiment.experiment_id]),
                "plot_metric_keys": json.dumps(["robust_accuracy"]),
            },
            quote_via=urllib.parse.quote,
        )
        png = artifacts / "mlflow-ui-robust-accuracy.png"
        expected = ["robust_accuracy", *cell_names]
        _capture(chromium, profile, f"{base}#/metric?{query}", expected, png, (1600, 1000))
    finally:
        _stop(process)
