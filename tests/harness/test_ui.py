"""`medbench ui` serves the MLflow UI on loopback against the chosen store."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_ui_serves_the_store_on_loopback(tmp_path: Path) -> None:
    port = _free_port()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    process = subprocess.Popen(
        [sys.executable, "-m", "medbench", "ui", "--port", str(port), "--tracking-uri", uri],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ),
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        body = ""
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"medbench ui exited early: {process.stdout.read() if process.stdout else ''}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    body = response.read().decode()
                    break
            except OSError:
                time.sleep(0.5)
        assert body.strip() == "OK"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
            assert response.status == 200 and "MLflow" in response.read().decode()
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)


def test_ui_warns_before_binding_beyond_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from medbench.cli import cli, ui

    calls: list[list[str]] = []
    monkeypatch.setattr(ui.subprocess, "call", lambda command: calls.append(command) or 0)
    result = CliRunner().invoke(cli, ["ui", "--host", "0.0.0.0", "--port", "5999"])
    assert "no authentication" in result.output
    assert calls and calls[0][-4:] == ["--host", "0.0.0.0", "--port", "5999"]
    assert "--backend-store-uri" in calls[0]
