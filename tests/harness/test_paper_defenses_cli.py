"""Every defense of papers 000-002 trains for one short epoch on phantom2d and is attacked
in a matrix cell through the CLI, with finite metrics logged to MLflow."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from mlflow import MlflowClient

from medbench.cli import main
from medbench.measuring.metrics import CLASSIFICATION_METRICS

DEFENSES = [
    "none",
    "at-pgd",
    "at-fgsm",
    "at-bim",
    "at-gn",
    "tc",
    "tc-glcm",
    "colorize-deconv[stage=color-module]",
    "colorize-deconv[stage=all]",
    "colorize-deconv[stage=last-layer]",
    "colorize-pixelshuffle[stage=all]",
    "colorize-coloru[stage=last-layer]",
    "dcnn",
    "dcnn[lambda_n=1,lambda_a=0]",
    "reformer",
    "hgd",
    "reformer+dcnn",
    "hgd+dcnn",
]


def test_every_paper_defense_runs_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [
        "run",
        "--dataset",
        "phantom2d",
        "--set",
        "dataset.phantom2d.n_samples=160",
        "--set",
        "dataset.phantom2d.image_size=32",
        "--model",
        "resnet18",
        "--epochs",
        "1",
        "--n-eval",
        "8",
        "--defense",
        ",".join(DEFENSES),
        "--attack",
        "pgd",
        "--eps",
        "4/255",
        "--set",
        "attack.pgd.max_iter=2",
        "--tracking-uri",
        uri,
        "--experiment",
        "paper-defenses",
        "--json",
    ]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    assert exit_info.value.code in (0, None), captured.err
    document = json.loads(captured.out)
    assert [cell["defense"] for cell in document["cells"]] == DEFENSES
    client = MlflowClient(tracking_uri=uri)
    for cell in document["cells"]:
        run = client.get_run(cell["run_id"])
        assert run.info.status == "FINISHED", cell["defense"]
        assert run.data.params["defense"] == cell["defense"]
        for name in CLASSIFICATION_METRICS:
            assert math.isfinite(run.data.metrics[name]), (cell["defense"], name)
        assert run.data.metrics["linf_max"] <= 4 / 255 + 1e-6
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "defense")}
        if cell["defense"].startswith(("tc", "colorize")):
            assert artifacts, f"{cell['defense']} logged no defense images"
