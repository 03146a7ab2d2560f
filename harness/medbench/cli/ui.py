"""`medbench ui`: the MLflow UI against the same store as `medbench run`."""

from __future__ import annotations

import subprocess
import sys

import click

from medbench.cli.app import LOOPBACK_HOSTS, cli


@cli.command()
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--host",
    "bind_host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind (loopback by default).",
)
@click.option("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db).")
def ui(port: int, bind_host: str, tracking_uri: str | None) -> None:
    """Start the MLflow UI on 127.0.0.1 against the same store as `medbench run`."""
    from medbench.recording.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    if bind_host not in LOOPBACK_HOSTS:
        click.echo(
            f"warning: the MLflow UI has no authentication; binding to {bind_host} exposes every run",
            err=True,
        )
    click.echo(f"MLflow UI for {uri} on http://{bind_host}:{port} (Ctrl-C to stop)", err=True)
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        bind_host,
        "--port",
        str(port),
    ]
    try:
        raise SystemExit(subprocess.call(command))
    except KeyboardInterrupt:
        raise SystemExit(0) from None
