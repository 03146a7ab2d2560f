"""A user's own model on the command line: factories, TorchScript, --checkpoint and --weights.

Everything runs through `medbench run` on real files and a real SQLite store; "nothing
recorded" is checked by reading the store back.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import torch
from torch import nn

from medbench.cli import main

TINY = ["--dataset", "phantom2d", "--set", "dataset.phantom2d.image_size=16", "--n-eval", "16"]
FACTORY = """
import torch
from torch import nn


def build(num_classes, in_channels):
    return nn.Sequential(
        nn.Conv2d(in_channels, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(16, num_classes),
    )


def broken():
    raise RuntimeError("no GPU here\\nsecond line")


def not_a_module():
    return 42
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "nets.py").write_text(FACTORY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MEDBENCH_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def _factory_module(seed: int) -> nn.Module:
    namespace: dict[str, object] = {}
    exec(FACTORY, namespace)
    torch.manual_seed(seed)
    return namespace["build"](num_classes=2, in_channels=1)  # type: ignore[operator]


def _run(capsys: pytest.CaptureFixture[str], *arguments: str) -> tuple[int, dict, str]:
    with pytest.raises(SystemExit) as done:
        defense = [] if "--defense" in arguments else ["--defense", "none"]
        main(["run", *TINY, *defense, "--attack", "fgsm", "--eps", "8/255", "--json", *arguments])
    captured = capsys.readouterr()
    document = json.loads(captured.out) if captured.out.strip() else {}
    return int(done.value.code or 0), document, captured.err


def _cell_keys(workdir: Path, experiment: str) -> list[str]:
    client = mlflow.tracking.MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = client.search_runs([found.experiment_id])
    return [r.data.tags["medbench.cell_key"] for r in runs if "medbench.cell_key" in r.data.tags]


def test_a_checkpoint_is_evaluated_as_it_is_and_overwriting_it_changes_the_results(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = workdir / "trained.pt"
    torch.save(_factory_module(0).state_dict(), checkpoint)
    options = ("--model", "nets.py:build", "--checkpoint", str(checkpoint), "--experiment", "own")
    code, first, err = _run(capsys, *options)
    assert code == 0, err
    assert "training" not in err.lower().replace("adversarial training", ""), "a checkpoint is not retrained"
    code, _, err = _run(capsys, *options)
    assert code == 0 and "already FINISHED" in err, "the same file resumes"
    torch.save(_factory_module(1).state_dict(), checkpoint)  # same path, other contents
    code, changed, err = _run(capsys, *options)
    assert code == 0 and "already FINISHED" not in err
    assert changed["cells"][0]["run_id"] != first["cells"][0]["run_id"]
    assert len(set(_cell_keys(workdir, "own"))) == 2, "one cell key per checkpoint content"
    before = first["cells"][0]["metrics"]
    after = changed["cells"][0]["metrics"]
    assert (before["clean_accuracy"], before["robust_accuracy"], before["ssim_mean"]) != (
        after["clean_accuracy"],
        after["robust_accuracy"],
        after["ssim_mean"],
    )


def test_overwriting_a_weights_file_changes_the_trained_model(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = workdir / "start.pt"
    torch.save(_factory_module(0).state_dict(), weights)
    options = ("--model", "nets.py:build", "--weights", str(weights), "--epochs", "1", "--experiment", "w")
    code, first, err = _run(capsys, *options)
    assert code == 0, err
    torch.save(_factory_module(3).state_dict(), weights)
    code, changed, err = _run(capsys, *options)
    assert code == 0 and "from cache" not in err and "already FINISHED" not in err, err
    assert len(set(_cell_keys(workdir, "w"))) == 2
    assert first["cells"][0]["metrics"] != changed["cells"][0]["metrics"]


def test_a_torchscript_file_is_a_model(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scripted = torch.jit.script(_factory_module(0))
    scripted.save(str(workdir / "net.pt"))
    code, document, err = _run(capsys, "--model", "net.pt", "--experiment", "ts")
    assert code == 0, err
    assert document["cells"][0]["model"] == "net.pt"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("--model", "missing.py:build"), "no such file missing.py"),
        (("--model", "nets.py:buld"), "has no function 'buld'"),
        (("--model", "nets.py:broken"), "the factory raised RuntimeError: no GPU here"),
        (("--model", "nets.py:not_a_module"), "returned int, not a torch.nn.Module"),
        (("--model", "no_such_package.module:build"), "no module named 'no_such_package'"),
        (("--model", "nets.py:build", "--checkpoint", "nowhere.pt"), "--checkpoint nowhere.pt: no such file"),
        (("--model", "nets.py:build", "--checkpoint", "nets.py"), "not a state dict saved with torch.save"),
        (
            ("--model", "nets.py:build", "--checkpoint", "net3.pt"),
            "is (3, 16) in the file, (2, 16) in the model",
        ),
        (("--model", "nets.py:build", "--normalization", "0.5,0"), "positive standard deviations"),
        (("--model", "smallcnn", "--checkpoint", "other.pt"), "does not fit model 'smallcnn'"),
        (
            ("--model", "nets.py:build", "--checkpoint", "other.pt", "--defense", "at-pgd"),
            "evaluated as it is",
        ),
        (("--model", "resnet18", "--normalization", "imagenet"), "normalisation has 3 channels"),
        (("--model", "fake.pt"), "no such TorchScript file"),
    ],
)
def test_bad_user_models_are_one_line_errors_and_record_nothing(
    workdir: Path, capsys: pytest.CaptureFixture[str], arguments: tuple[str, ...], message: str
) -> None:
    torch.save({"other.weight": torch.zeros(1)}, workdir / "other.pt")
    namespace: dict[str, object] = {}
    exec(FACTORY, namespace)
    torch.save(namespace["build"](num_classes=3, in_channels=1).state_dict(), workdir / "net3.pt")  # type: ignore[operator]
    code, document, err = _run(capsys, *arguments, "--experiment", "bad")
    assert code == 2
    assert document == {}
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert _cell_keys(workdir, "bad") == [], "nothing recorded"


def test_a_defense_that_cannot_wrap_a_model_fails_before_anything_trains(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(
        capsys, "--model", "smallcnn", "--defense", "none,at-pgd,dcnn", "--experiment", "plan"
    )
    assert code == 2
    assert "defense 'dcnn' cannot be built on model 'smallcnn'" in err
    assert "trained" not in err, "nothing trained first"
    assert not (workdir / "cache").exists() or not any((workdir / "cache").rglob("*.pt"))


def test_one_model_file_has_one_name_however_its_path_is_spelt(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.jit.script(_factory_module(0)).save(str(workdir / "net.pt"))
    code, first, err = _run(capsys, "--model", "net.pt", "--experiment", "paths")
    assert code == 0, err
    code, again, err = _run(capsys, "--model", "./sub/../net.pt", "--experiment", "paths")
    assert code == 0 and "already FINISHED" in err
    assert again["cells"][0]["run_id"] == first["cells"][0]["run_id"]
