"""Transfer (black-box) cells: crafted on ``--surrogate``, evaluated on every target."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from medbench.cli import main

BASE = [
    "run",
    "--dataset",
    "phantom2d",
    "--set",
    "dataset.phantom2d.n_samples=1200",
    "--set",
    "dataset.phantom2d.image_size=32",
    "--model",
    "smallcnn",
    "--defense",
    "none",
    "--epochs",
    "3",
    "--n-eval",
    "64",
    "--attack",
    "pgd",
    "--eps",
    "8/255",
    "--json",
]


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> dict:  # type: ignore[type-arg]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    assert exit_info.value.code in (0, None), captured.err
    return json.loads(captured.out)


def test_transfer_cells_are_crafted_on_the_surrogate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    direct = _run([*BASE, "--tracking-uri", uri, "--experiment", "direct"], capsys)["cells"][0]
    document = _run(
        [*BASE, "--tracking-uri", uri, "--experiment", "transfer", "--surrogate", "smallcnn"], capsys
    )
    transfer = document["cells"][0]
    assert direct["threat"] == "direct" and "surrogate" not in direct
    assert transfer["threat"] == "transfer" and transfer["surrogate"] == "smallcnn:none"
    # same target, same samples: only where the examples were crafted differs
    assert transfer["metrics"]["clean_accuracy"] == direct["metrics"]["clean_accuracy"]
    # white-box examples on the target are at least as strong as examples from another model
    assert direct["metrics"]["robust_accuracy"] <= transfer["metrics"]["robust_accuracy"]
    assert transfer["metrics"]["linf_max"] <= 8 / 255 + 1e-6
    run = MlflowClient(tracking_uri=uri).get_run(transfer["run_id"])
    assert run.data.params["surrogate"] == "smallcnn:none"
    assert run.data.params["threat"] == "transfer"
    assert run.data.tags["medbench.threat"] == "transfer"


def test_a_bad_surrogate_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*BASE, "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "--surrogate", "smalcnn"])
    assert exit_info.value.code == 2
    assert "did you mean 'smallcnn'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main([*BASE, "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "--surrogate", "smallcnn:at-pdg"])
    assert exit_info.value.code == 2
    assert "at-pgd" in capsys.readouterr().err
