"""3D segmentation end to end through the CLI on phantom3d: every attack and defense of the
vafa-3d suite, with finite Dice, HD95 and SSIM logged to MLflow."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from mlflow import MlflowClient

from medbench.cli import main

SPEC = """
name: seg-cli
dataset: phantom3d
models: [unetr-tiny]
defenses: [none, at-pgd, "vaft[steps=2,block_size=8]", "vaft-fr[steps=2,block_size=8,fr_loss=normalized-l1]"]
attacks: [fgsm, pgd, bim, gn, vafa, vafa-2d]
budgets: {eps: [4/255], sigma: [4/255], q_max: [20]}
n_eval: 1
training: {epochs: 1, batch_size: 2, lr: 0.001}
settings:
  dataset:
    phantom3d: {image_size: 32, n_train: 4, n_val: 1, n_test: 1}
  model:
    unetr-tiny: {roi: 16}
  attack:
    pgd: {max_iter: 3, eps_step: 0.01}
    bim: {max_iter: 2, eps_step: 0.01}
    vafa: {steps: 2}
    vafa-2d: {steps: 2}
  defense:
    at-pgd: {max_iter: 1}
"""


@pytest.mark.slow
def test_segmentation_matrix_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "seg.yaml"
    spec.write_text(SPEC)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--spec", str(spec), "--tracking-uri", uri, "--json"])
    captured = capsys.readouterr()
    assert exit_info.value.code in (0, None), captured.err
    assert "lpips_sim left out" in captured.err or "lpips" not in captured.err
    document = json.loads(captured.out)
    assert len(document["cells"]) == 4 * 6
    client = MlflowClient(tracking_uri=uri)
    for cell in document["cells"]:
        run = client.get_run(cell["run_id"])
        assert run.info.status == "FINISHED", (cell["defense"], cell["attack"], cell.get("error"))
        metrics = run.data.metrics
        for name in ("clean_dice", "robust_dice", "clean_hd95", "robust_hd95", "ssim_mean", "linf_max"):
            assert math.isfinite(metrics[name]), (cell["defense"], cell["attack"], name)
        assert 0 <= metrics["robust_dice"] <= 1 and 0 <= metrics["clean_dice"] <= 1
        if cell["attack"] in ("fgsm", "pgd", "bim"):
            assert metrics["linf_max"] <= 4 / 255 + 1e-6
        artifacts = {a.path for a in client.list_artifacts(cell["run_id"])}
        assert "examples.png" in artifacts
    assert document["cells"][0]["budget_name"] == "eps"
    assert {c["threat_model"] for c in document["cells"]} == {"linf", "noise", "frequency"}


def test_a_2d_model_on_a_3d_dataset_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--dataset", "phantom3d", "--model", "smallcnn", "--attack", "fgsm"])
    assert exit_info.value.code == 2
    assert "does not support segmentation" in capsys.readouterr().err


def test_a_classification_attack_on_segmentation_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--dataset", "phantom2d", "--model", "smallcnn", "--attack", "vafa"])
    assert exit_info.value.code == 2
    assert "does not support classification" in capsys.readouterr().err
