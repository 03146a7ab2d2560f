"""Hostile and broken plugins: models with wrong outputs, attacks that raise or cheat, plugins
that fail at import or registration.

A broken model or attack must end in FAILED cells (exit code 1, ``medbench.error`` tag,
``error.txt`` traceback) while the rest of the matrix runs; a plugin that fails to load must be
reported by ``medbench plugins`` while the others keep working (``--strict-plugins``: exit 2).
Already covered elsewhere, so not repeated here:

* a model returning NaN logits: ``tests/harness/test_cli.py::
  test_a_model_returning_nan_fails_its_cells_and_the_others_run`` (slow);
* a plugin failing at import, in-process and through the CLI (``plugins``, ``list``,
  ``--strict-plugins``): ``tests/harness/test_plugins.py::test_broken_plugin_is_reported_and_skipped``
  and ``test_cli_reports_an_installed_broken_third_party_plugin`` (slow);
* a registration hook raising, on the plugin host: ``tests/harness/test_plugins.py::
  test_plugin_whose_registration_hook_raises_is_unregistered``.
"""

from __future__ import annotations

import contextlib
import io
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from medbench.cli import main

TINY = [
    "--dataset", "phantom2d", "--set", "dataset.phantom2d.n_samples=200",
    "--set", "dataset.phantom2d.image_size=16", "--defense", "none", "--epochs", "0", "--n-eval", "8",
    "--eps", "8/255",
]  # fmt: skip

HOSTILE_PLUGIN = '''
import sys
from dataclasses import dataclass

from torch import nn

from medbench import hookimpl
from medbench.api import Attack, Model


class Shaped(nn.Module):
    """Logits of the wrong shape: (N,), (N - 1, K) or (N, K + 1)."""

    def __init__(self, num_classes, mode):
        super().__init__()
        self.linear = nn.Linear(1, num_classes + (mode == "extra-class"))
        self.mode = mode

    def forward(self, x):
        logits = self.linear(x.mean(dim=(1, 2, 3)).unsqueeze(1))
        if self.mode == "flat":
            return logits[:, 0]
        if self.mode == "short-batch":
            return logits[:-1]
        return logits


def shaped(mode):
    class ShapedModel(Model):
        name = f"hostile-{mode}"
        description = f"logits of the wrong shape ({mode})"

        def build(self, task, in_channels, num_classes, weights=None):
            return Shaped(num_classes, mode)

    return ShapedModel()


class _Attack(Attack):
    @dataclass(frozen=True)
    class Settings:
        """No settings."""


class Raising(_Attack):
    name = "hostile-raising"
    description = "raises inside generate"

    def generate(self, estimator, x, y, budget, *, seed):
        raise RuntimeError("boom inside generate")


class ReturnsNone(_Attack):
    name = "hostile-none"
    description = "returns None"

    def generate(self, estimator, x, y, budget, *, seed):
        return None


class InPlace(_Attack):
    name = "hostile-inplace"
    description = "blanks its input in place and returns it: far beyond any budget"

    def generate(self, estimator, x, y, budget, *, seed):
        return x.mul_(0.0)


class Exiting(_Attack):
    name = "hostile-exit"
    description = "calls sys.exit(0) inside generate"

    def generate(self, estimator, x, y, budget, *, seed):
        sys.exit(0)


@hookimpl
def register_models(register):
    for mode in ("flat", "short-batch", "extra-class"):
        register(shaped(mode))


@hookimpl
def register_attacks(register):
    for attack in (Raising(), ReturnsNone(), InPlace(), Exiting()):
        register(attack)
'''

HALF_REGISTERED_PLUGIN = """
from medbench import hookimpl
from medbench_art.fgsm import FGSM


class Other(FGSM):
    name = "hostile-half-fgsm"


@hookimpl
def register_attacks(register):
    register(Other())
    raise RuntimeError("boom while registering")
"""


def _write_distribution(site: Path, module: str, source: str) -> None:
    """A module and a minimal installed distribution whose ``medbench`` entry point names it."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    info = site / f"{module}-0.1.dist-info"
    info.mkdir()
    dist = module.replace("_", "-")
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(f"[medbench]\n{dist} = {module}\n", encoding="utf-8")


def run_cli(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(args)
        except SystemExit as done:
            code = done.code
        else:  # pragma: no cover - main always exits
            code = 0
    return (code if isinstance(code, int) else 1), out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def hostile_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("site")
    _write_distribution(site, "medbench_hostile_models", HOSTILE_PLUGIN)
    return site


@pytest.fixture
def with_hostile_plugin(hostile_site: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(hostile_site))
    return hostile_site


def _run_matrix(tmp_path: Path, models: str, attacks: str) -> tuple[int, str, dict[tuple[str, str], Any]]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code, out, err = run_cli(
        ["run", *TINY, "--model", models, "--attack", attacks, "--tracking-uri", uri, "--json"]
    )
    assert "Traceback" not in err, err
    cells = {(c["model"], c["attack"]): c for c in json.loads(out)["cells"]} if out.strip() else {}
    return code, uri, cells


def _assert_failed(uri: str, cell: dict[str, Any], fragment: str) -> None:
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(cell["run_id"])
    assert cell["status"] == "FAILED" and run.info.status == "FAILED", cell
    assert fragment in cell["error"] and fragment in run.data.tags["medbench.error"], cell
    assert not run.data.metrics, "a failed cell records no metrics"
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
    assert "error.txt" in artifacts
    traceback = Path(client.download_artifacts(run.info.run_id, "error.txt")).read_text()
    assert "Traceback" in traceback or fragment in traceback


def test_broken_models_and_attacks_fail_their_cells_and_the_matrix_goes_on(
    tmp_path: Path, with_hostile_plugin: Path
) -> None:
    code, uri, cells = _run_matrix(
        tmp_path, "smallcnn,hostile-flat,hostile-short-batch", "fgsm,hostile-raising,hostile-none"
    )
    assert code == 1
    assert len(cells) == 9
    assert cells["smallcnn", "fgsm"]["status"] == "FINISHED"
    _assert_failed(uri, cells["smallcnn", "hostile-raising"], "RuntimeError: boom inside generate")
    traceback_file = MlflowClient(tracking_uri=uri).download_artifacts(
        cells["smallcnn", "hostile-raising"]["run_id"], "error.txt"
    )
    traceback = Path(traceback_file).read_text()
    assert "Traceback" in traceback and 'raise RuntimeError("boom inside generate")' in traceback
    _assert_failed(uri, cells["smallcnn", "hostile-none"], "AttributeError")
    for model in ("hostile-flat", "hostile-short-batch"):
        for attack in ("fgsm", "hostile-raising", "hostile-none"):
            _assert_failed(uri, cells[model, attack], "")  # at the group or inside the cell
    parent = MlflowClient(tracking_uri=uri).get_run(cells["smallcnn", "fgsm"]["run_id"])
    parent_id = parent.data.tags["mlflow.parentRunId"]
    summary = MlflowClient(tracking_uri=uri).get_run(parent_id).data.metrics
    assert summary["cells_finished"] == 1 and summary["cells_failed"] == 8


def test_a_model_with_an_extra_class_fails_its_cells(tmp_path: Path, with_hostile_plugin: Path) -> None:
    code, uri, cells = _run_matrix(tmp_path, "hostile-extra-class", "fgsm")
    assert code == 1
    _assert_failed(uri, cells["hostile-extra-class", "fgsm"], "shape")


def test_an_attack_perturbing_its_input_in_place_is_caught(tmp_path: Path, with_hostile_plugin: Path) -> None:
    code, uri, cells = _run_matrix(tmp_path, "smallcnn", "hostile-inplace,fgsm")
    _assert_failed(uri, cells["smallcnn", "hostile-inplace"], "exceeded its budget")
    assert code == 1


def test_an_attack_calling_sys_exit_fails_its_cell(tmp_path: Path, with_hostile_plugin: Path) -> None:
    code, uri, cells = _run_matrix(tmp_path, "smallcnn", "hostile-exit,fgsm")
    assert code == 1 and cells, "the matrix went on and printed its cells"
    _assert_failed(uri, cells["smallcnn", "hostile-exit"], "SystemExit")
    assert cells["smallcnn", "fgsm"]["status"] == "FINISHED"


@pytest.fixture
def broken_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    site = tmp_path / "site"
    _write_distribution(site, "medbench_hostile_half", HALF_REGISTERED_PLUGIN)
    _write_distribution(site, "medbench_hostile_import", "raise ImportError('missing dependency xyz')\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("COLUMNS", "250")
    yield site


def test_plugins_failing_at_import_or_registration_are_reported_and_the_rest_work(broken_site: Path) -> None:
    code, out, err = run_cli(["plugins"])
    assert code == 0, err
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 3}
    assert (
        "failed" in rows["medbench-hostile-half"]
        and "boom while registering" in rows["medbench-hostile-half"]
    )
    assert "failed" in rows["medbench-hostile-import"] and "missing dependency xyz" in out
    assert "loaded" in rows["art"]

    code, out, err = run_cli(["list", "attacks"])
    assert code == 0, err
    assert "pgd" in out and "hostile-half-fgsm" not in out, "a half-registered plugin is unregistered"

    for args in (["--strict-plugins", "list", "attacks"], ["--strict-plugins", "plugins"]):
        code, out, err = run_cli(args)
        assert code == 2, (args, err)
        if args[-1] != "plugins":  # `plugins` prints its table first, then fails
            assert len(err.strip().splitlines()) == 1 and "failed to load" in err, err


def test_strict_plugins_refuses_a_run_before_recording_anything(broken_site: Path, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code, _, err = run_cli(["run", "--strict-plugins", *TINY, "--model", "smallcnn", "--tracking-uri", uri])
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "plugin 'medbench-hostile-half' failed to load" in err or "medbench-hostile-import" in err
    assert not (tmp_path / "mlflow.db").exists()


def test_a_plugin_exiting_at_import_is_reported_and_the_rest_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    _write_distribution(site, "medbench_hostile_exit", "import sys\nsys.exit(0)\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("COLUMNS", "250")
    code, out, _ = run_cli(["list", "attacks"])
    assert code == 0 and "pgd" in out
    code, out, _ = run_cli(["plugins"])
    assert code == 0 and "medbench-hostile-exit" in out and "failed" in out, out
