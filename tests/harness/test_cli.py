"""End to end through the CLI: a tiny matrix, its JSON, the MLflow store, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from medbench.cli import main
from medbench.measuring.metrics import CLASSIFICATION_METRICS

TINY = [
    "--dataset",
    "phantom2d",
    "--set",
    "dataset.phantom2d.n_samples=240",
    "--set",
    "dataset.phantom2d.image_size=32",
    "--model",
    "smallcnn",
    "--epochs",
    "1",
    "--n-eval",
    "24",
]


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def _all_runs(uri: str) -> list:  # type: ignore[type-arg]
    client = MlflowClient(tracking_uri=uri)
    runs = []
    for experiment in client.search_experiments():
        runs.extend(client.search_runs([experiment.experiment_id]))
    return runs


def test_tiny_matrix_json_matches_the_mlflow_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code, out, err = run_cli(
        [
            "run",
            *TINY,
            "--defense",
            "none",
            "--attack",
            "fgsm,gn",
            "--eps",
            "2/255,8/255",
            "--tracking-uri",
            uri,
            "--experiment",
            "e2e",
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    document = json.loads(out)
    assert document["experiment"] == "e2e"
    cells = document["cells"]
    assert [(c["attack"], round(c["budget"] * 255)) for c in cells] == [
        ("fgsm", 2),
        ("fgsm", 8),
        ("gn", 2),
        ("gn", 8),
    ]
    assert {c["budget_name"] for c in cells} == {"eps", "sigma"}

    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(document["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["medbench.role"] == "matrix"
    experiment = client.get_experiment_by_name("e2e")
    children = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(children) == len(cells)
    by_id = {run.info.run_id: run for run in children}
    for cell in cells:
        run = by_id[cell["run_id"]]
        assert run.info.status == "FINISHED" and cell["status"] == "FINISHED"
        assert set(CLASSIFICATION_METRICS) <= set(run.data.metrics)
        for name, value in cell["metrics"].items():
            if value is not None:
                assert run.data.metrics[name] == pytest.approx(value)
        assert run.data.params["attack"] == cell["attack"]
        assert float(run.data.params["budget"]) == pytest.approx(cell["budget"])
        for key in ("dataset", "model", "defense", "budget_name", "threat_model", "n_eval", "seed"):
            assert key in run.data.params
        assert len(run.data.tags["medbench.cell_key"]) == 32
        assert "art==" in run.data.tags["medbench.plugins"]
        assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["examples.png", "per_sample.npz"]
        metrics = cell["metrics"]
        assert metrics["robust_accuracy"] <= metrics["clean_accuracy"] + 1e-9 or cell["attack"] == "gn"
        assert metrics["linf_max"] <= cell["budget"] + 1e-6 or cell["attack"] == "gn"
    assert "results.json" in [a.path for a in client.list_artifacts(parent.info.run_id)]


def test_second_run_loads_the_trained_model_from_cache(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [
        "run",
        *TINY,
        "--defense",
        "none",
        "--attack",
        "fgsm",
        "--eps",
        "4/255",
        "--tracking-uri",
        uri,
        "--json",
    ]
    code, first, err = run_cli(args, capsys)
    assert code == 0 and "trained smallcnn/none" in err
    # --rerun: the cell itself is kept by a plain second run (resume); rerunning it loads the model
    code, second, err = run_cli([*args, "--rerun"], capsys)
    assert code == 0 and "from cache" in err and "trained smallcnn/none" not in err
    metrics = [json.loads(text)["cells"][0]["metrics"] for text in (first, second)]
    assert metrics[0]["robust_accuracy"] == metrics[1]["robust_accuracy"]
    assert metrics[0]["clean_accuracy"] == metrics[1]["clean_accuracy"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--attack", "pdg"], "unknown attack 'pdg'; did you mean 'pgd'?"),
        (["run", "--defense", "at-pdg"], "unknown defense 'at-pdg'; did you mean 'at-pgd'?"),
        (["run", "--model", "resnet19"], "unknown model 'resnet19'; did you mean 'resnet18'?"),
        (
            ["run", "--dataset", "phantom"],
            "unknown dataset 'phantom'; did you mean 'phantom2d' or 'phantom3d'?",
        ),
        (["run", "--suite", "smok"], "unknown suite 'smok'; did you mean 'smoke'?"),
        (["run", "--eps", "8/0"], "division by zero"),
        (["run", "--eps", "-1"], "must be >= 0"),
        (["run", "--eps", "abc"], "malformed budget 'abc'"),
        (["run", "--budget", "q_max=20"], "unknown attack or budget name 'q_max'"),
        (["run", "--set", "attack.pgd.max_itr=3"], "unknown setting 'max_itr'; did you mean 'max_iter'?"),
        (["run", "--set", "attack.pgd.max_iter=abc"], "max_iter expects an integer"),
        (["run", "--set", "attack.pgdd.max_iter=3"], "unknown attack 'pgdd'"),
        (["run", "--set", "nonsense"], "malformed --set"),
        (["run", "--dataset", "imagefolder"], "give --data-dir"),
        (["run", "--dataset", "imagefolder", "--data-dir", "/nonexistent/medbench"], "does not exist"),
        (["run", "--n-eval", "100000"], "larger than the test split"),
        (["run", "--device", "tpu"], "device"),
        (["run", "--defense", "at-pgd+none"], "training defense"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code, _, err = run_cli([*args, "--tracking-uri", uri], capsys)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "mlflow.db").exists() or not _all_runs(uri)


def test_spec_file_with_unknown_keys_is_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("dataset: phantom2d\nattaks: [pgd]\n", encoding="utf-8")
    code, _, err = run_cli(["run", "--spec", str(spec)], capsys)
    assert code == 2 and "unknown spec key 'attaks'; did you mean 'attacks'?" in err
    spec.write_text("dataset: [unclosed\n", encoding="utf-8")
    code, _, err = run_cli(["run", "--spec", str(spec)], capsys)
    assert code == 2 and "not valid YAML" in err
    spec.write_text("budgets: {eps: [8/0]}\n", encoding="utf-8")
    code, _, err = run_cli(["run", "--spec", str(spec)], capsys)
    assert code == 2 and "division by zero" in err


def test_empty_and_corrupt_image_folders_are_rejected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(["run", "--dataset", "imagefolder", "--data-dir", str(empty)], capsys)
    assert code == 2 and str(empty) in err
    corrupt = tmp_path / "corrupt"
    for label in ("a", "b"):
        (corrupt / label).mkdir(parents=True)
        for index in range(3):
            (corrupt / label / f"{index}.png").write_bytes(b"\x89PNG not really an image")
    code, _, err = run_cli(["run", "--dataset", "imagefolder", "--data-dir", str(corrupt)], capsys)
    assert code == 2 and ".png" in err


def test_list_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["list", "attacks"], capsys)
    assert code == 0
    for name in ("fgsm", "bim", "pgd", "mifgsm", "gn"):
        assert name in out
    code, out, _ = run_cli(["list", "suites"], capsys)
    assert code == 0 and "smoke" in out
    code, out, _ = run_cli(["--help"], capsys)
    assert code == 0
    for command in ("run", "list", "plugins", "ui"):
        assert command in out


def test_list_shows_attack_budgets_and_dataset_layouts(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    code, out, _ = run_cli(["list", "attacks"], capsys)
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 3}
    assert code == 0
    assert "eps: 1/255,2/255,4/255,8/255" in rows["pgd"] and "q_max: 20,30" in rows["vafa"]
    assert "l2-minimal" in rows["cw-l2"] and "confidence: 0" in rows["cw-l2"]
    for name in ("cw-linf", "autoattack", "apgd-ce", "apgd-dlr", "square", "deepfool", "hsj"):
        assert name in rows
    code, out, _ = run_cli(["list", "datasets"], capsys)
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 3}
    assert code == 0
    assert "DATA_DIR/stage_2_detailed_class_info.csv" in rows["rsna-pneumonia"]
    assert "DATA_DIR/train.csv and DATA_DIR/valid.csv of CheXpert" in rows["chexpert"]
    assert "generated, no files" in rows["phantom2d"]
    for name in ("brain-tumor-mri", "chest-xray-pneumonia", "iq-oth-nccd", "busi", "isic2018-skin4"):
        assert "DATA_DIR/" in rows[name]
    for name in ("chestxray14", "mura-shoulder", "dicom", "nifti"):
        assert "DATA_DIR/" in rows[name]


NAN_PLUGIN = """
from dataclasses import dataclass
import torch
from torch import nn
from medbench import hookimpl
from medbench.api import Model

class NaNNet(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.linear = nn.Linear(1, num_classes)
    def forward(self, x):
        return self.linear(x.mean(dim=(1, 2, 3)).unsqueeze(1)) * float("nan")

class NaNModel(Model):
    name = "nan-model"
    description = "returns NaN logits"
    def build(self, task, in_channels, num_classes, weights=None):
        return NaNNet(num_classes)

@hookimpl
def register_models(register):
    register(NaNModel())
"""


@pytest.mark.slow
def test_a_model_returning_nan_fails_its_cells_and_the_others_run(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "nan_plugin.py").write_text(textwrap.dedent(NAN_PLUGIN), encoding="utf-8")
    info = site / "nan_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: nan-plugin\nVersion: 0.1\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text("[medbench]\nnan = nan_plugin\n", encoding="utf-8")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "PYTHONPATH": str(site), "MEDBENCH_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "medbench",
            "run",
            *TINY,
            "--model",
            "smallcnn,nan-model",
            "--defense",
            "none",
            "--attack",
            "fgsm",
            "--eps",
            "4/255",
            "--tracking-uri",
            uri,
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr
    cells = {c["model"]: c for c in json.loads(result.stdout)["cells"]}
    assert cells["smallcnn"]["status"] == "FINISHED"
    assert cells["nan-model"]["status"] == "FAILED"
    assert "NaN" in cells["nan-model"]["error"]
    client = MlflowClient(tracking_uri=uri)
    failed = client.get_run(cells["nan-model"]["run_id"])
    assert failed.info.status == "FAILED" and "NaN" in failed.data.tags["medbench.error"]
    assert "error.txt" in [a.path for a in client.list_artifacts(failed.info.run_id)]
