"""The Python API (medbench.evaluate, run, load_results, Results) and a user's own model on the CLI.

The README's Python example and its CLI equivalent run here exactly as the README prints them,
on real files (PNGs, a state dict, a factory module) and a real SQLite MLflow store.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import medbench
from medbench.cli import main
from medbench.errors import UsageError

README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_block(marker: str, language: str) -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"<!-- {marker}:.*?-->\n```{language}\n(.*?)```", text, re.S)
    assert match, f"README has no {marker} block"
    return match.group(1)


def _png_folder(root: Path, per_class: int, size: int) -> None:
    """Two classes of RGB PNGs: noise, and noise with a bright square (a 'lesion')."""
    rng = np.random.default_rng(0)
    for name in ("normal", "pneumonia"):
        folder = root / name
        folder.mkdir(parents=True)
        for index in range(per_class):
            pixels = (rng.random((size, size, 3)) * 160).astype(np.uint8)
            if name == "pneumonia":
                pixels[size // 4 : size // 2, size // 4 : size // 2] = 255
            Image.fromarray(pixels).save(folder / f"{index:03d}.png")


@pytest.fixture
def readme_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The files the README's example names, in a working folder with its own store and cache."""
    import torchvision

    _png_folder(tmp_path / "my_pngs", per_class=110, size=32)
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(num_classes=2).state_dict(), tmp_path / "resnet18_pneumonia.pt")
    (tmp_path / "build_resnet.py").write_text(
        "import torchvision\n\n\ndef build(num_classes):\n"
        "    return torchvision.models.resnet18(num_classes=num_classes)\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MEDBENCH_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


@pytest.mark.slow
def test_the_readme_python_example_gives_the_numbers_of_its_cli_equivalent(
    readme_files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    namespace: dict[str, object] = {}
    exec(compile(_readme_block("python-example", "python"), "README.md", "exec"), namespace)
    results = namespace["results"]
    assert isinstance(results, medbench.Results)
    assert (readme_files / "robustness_curves.png").stat().st_size > 0
    frame = results.frame
    assert list(frame["status"]) == ["FINISHED"] * 4
    capsys.readouterr()

    command = shlex.split(_readme_block("cli-example", "bash").replace("\\\n", " "))
    assert command[:2] == ["medbench", "run"]
    with pytest.raises(SystemExit) as done:
        main([*command[1:], "--experiment", "cli", "--json"])
    assert done.value.code == 0
    document = json.loads(capsys.readouterr().out)
    from_cli = {
        (c["attack"], round(c["budget"], 9)): c["metrics"]
        for c in document["cells"]
        if c["status"] == "FINISHED"
    }
    assert len(from_cli) == 4
    for _, row in frame.iterrows():
        cli_metrics = from_cli[(row["attack"], round(row["budget"], 9))]
        for name in ("clean_accuracy", "robust_accuracy", "attack_success_rate", "linf_max"):
            assert row[name] == pytest.approx(cli_metrics[name], abs=1e-9), (row["attack"], name)


def _tensors(n: int = 24, channels: int = 1, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(n, channels, size, size, generator=generator)
    y = torch.arange(n) % 2
    x[y == 1, :, 4:12, 4:12] = 1.0
    return x, y


class TinyNet(nn.Module):
    def __init__(self, channels: int = 1, classes: int = 2) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).flatten(1))


def _evaluate(model: nn.Module, data: object, **kwargs: object) -> medbench.Results:
    options: dict[str, object] = {
        "attacks": ["fgsm", "gn"],
        "eps": ["8/255"],
        "tracking_uri": False,
        "progress": False,
        "use_cache": False,
    }
    options.update(kwargs)
    return medbench.evaluate(model, data, **options)  # type: ignore[arg-type]


def test_evaluate_on_tensors_returns_a_frame_a_board_curves_and_flags() -> None:
    torch.manual_seed(0)
    results = _evaluate(TinyNet(), _tensors())
    frame = results.frame
    assert list(frame["attack"]) == ["fgsm", "gn"]
    assert list(frame["budget_text"]) == ["8/255", "8/255"]
    assert {"clean_accuracy", "robust_accuracy", "linf_max", "threat_model"} <= set(frame.columns)
    assert (frame["n_eval"] == 24).all()
    assert "TinyNet" in results.board()
    assert "| TinyNet |" in results.board("markdown")
    figure = results.curves()
    assert figure.axes, "the curves have at least one panel"
    assert all(hasattr(flag, "check") for flag in results.sanity)


def test_a_changed_model_is_never_mistaken_for_the_old_one(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    torch.manual_seed(0)
    model = TinyNet()
    first = _evaluate(model, _tensors(), tracking_uri=uri, experiment="same")
    again = _evaluate(model, _tensors(), tracking_uri=uri, experiment="same")
    assert list(again.frame["run_id"]) == list(first.frame["run_id"]), "an unchanged model resumes"
    with torch.no_grad():
        model.fc.bias += 5.0
    changed = _evaluate(model, _tensors(), tracking_uri=uri, experiment="same")
    assert not set(changed.frame["run_id"]) & set(first.frame["run_id"]), "a changed model computes new cells"


def test_load_results_reads_a_run_back(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    torch.manual_seed(0)
    results = _evaluate(TinyNet(), _tensors(), tracking_uri=uri, experiment="back")
    assert results.parent_run_id is not None
    by_run = medbench.load_results(run_id=results.parent_run_id, tracking_uri=uri)
    by_experiment = medbench.load_results(experiment="back", tracking_uri=uri)
    for loaded in (by_run, by_experiment):
        assert list(loaded.frame["run_id"]) == list(results.frame["run_id"])
        assert list(loaded.frame["robust_accuracy"]) == list(results.frame["robust_accuracy"])


def test_a_preprocessing_defense_wraps_a_users_model() -> None:
    torch.manual_seed(0)
    results = _evaluate(TinyNet(), _tensors(), defenses=["none", "spatial-smoothing"], attacks=["fgsm"])
    assert sorted(results.frame["defense"]) == ["none", "spatial-smoothing"]
    assert set(results.frame["status"]) == {"FINISHED"}


def test_a_factory_trains_under_a_training_defense() -> None:
    def build(in_channels: int, num_classes: int) -> nn.Module:
        return TinyNet(in_channels, num_classes)

    results = _evaluate(
        build,
        _tensors(),
        train_data=_tensors(48),
        defenses=["none", "at-fgsm"],
        attacks=["fgsm"],
        training={"epochs": 1},
    )
    assert sorted(results.frame["defense"]) == ["at-fgsm", "none"]
    assert set(results.frame["status"]) == {"FINISHED"}


def test_a_trained_model_refuses_a_training_defense() -> None:
    with pytest.raises(UsageError, match="evaluated as it is"):
        _evaluate(TinyNet(), _tensors(), defenses=["at-pgd"])


@pytest.mark.parametrize(
    ("model", "data", "message"),
    [
        ("not a model", _tensors(), "torch.nn.Module"),
        (TinyNet(), (_tensors()[0] * 255, _tensors()[1]), r"in \[0, 1\]"),
        (TinyNet(), (_tensors()[0], _tensors()[1].float()), "integer class indices"),
        (TinyNet(), (_tensors()[0].double().to(torch.int64), _tensors()[1]), "float tensors"),
        (TinyNet(channels=3), _tensors(), "fails on the data's input"),
        (nn.Sequential(nn.Flatten(), nn.Linear(256, 2), nn.Softmax(dim=1)), _tensors(), None),
        (nn.Sequential(nn.Flatten()), _tensors(), "returned outputs of shape"),
        (TinyNet(), (_tensors()[0], torch.full((24,), -1)), r"labels must be in \[0, 1\]"),
        (TinyNet(), (_tensors()[0], torch.full((24,), 7)), "expected \\(2, 8\\)"),
    ],
)
def test_bad_models_and_data_are_one_line_usage_errors(
    model: object, data: object, message: str | None
) -> None:
    if message is None:  # a softmax model is a model: it runs (its outputs are probabilities, not an error)
        _evaluate(model, data, attacks=["gn"])  # type: ignore[arg-type]
        return
    with pytest.raises(UsageError, match=message) as raised:
        _evaluate(model, data)  # type: ignore[arg-type]
    assert "\n" not in str(raised.value)


def test_set_assignments_leave_the_callers_spec_alone() -> None:
    from medbench.config.spec import RunSpec
    from medbench.engine.planning import plan_matrix
    from medbench.plugins.host import load_plugins

    spec = RunSpec(attacks=["pgd"], n_eval=8)
    before = repr(spec)
    plan = plan_matrix(
        spec, load_plugins(), torch.device("cpu"), assignments=[("attack", "pgd", "max_iter", "3")]
    )
    assert plan.attacks["pgd"].settings.max_iter == 3
    assert repr(spec) == before, "--set assignments go to a copy of the spec"


def test_the_code_of_a_model_is_part_of_its_identity(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    torch.manual_seed(0)
    relu = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(1024, 2))
    sigmoid = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Sigmoid(), nn.Flatten(), nn.Linear(1024, 2))
    sigmoid.load_state_dict(relu.state_dict())  # the same weights, other code
    first = _evaluate(relu, _tensors(), tracking_uri=uri, experiment="code", attacks=["fgsm"])
    other = _evaluate(sigmoid, _tensors(), tracking_uri=uri, experiment="code", attacks=["fgsm"])
    assert not set(other.frame["run_id"]) & set(first.frame["run_id"])

    def make(activation: type[nn.Module]) -> Callable[[], nn.Module]:
        def build() -> nn.Module:
            torch.manual_seed(0)
            return nn.Sequential(
                nn.Conv2d(1, 4, 3, padding=1), activation(), nn.Flatten(), nn.Linear(1024, 2)
            )

        return build

    from medbench.building.model_identity import function_identity

    assert function_identity(make(nn.ReLU)) != function_identity(make(nn.Sigmoid)), "closures differ"


def test_nothing_is_left_behind_with_tracking_uri_false(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    results = _evaluate(TinyNet(), _tensors(), attacks=["fgsm"])
    assert results.board()
    assert list(tmp_path.iterdir()) == [], "no ./mlruns, no mlflow.db in the working folder"


def test_a_scripted_module_object_is_a_model() -> None:
    torch.manual_seed(0)
    scripted = torch.jit.script(TinyNet())
    results = _evaluate(scripted, _tensors(), attacks=["fgsm"], defenses=["none", "spatial-smoothing"])
    assert set(results.frame["status"]) == {"FINISHED"}
    assert set(results.frame["model"]) == {"TinyNet"}


def test_names_and_budgets_given_as_one_string() -> None:
    torch.manual_seed(0)
    results = _evaluate(TinyNet(), _tensors(), attacks="fgsm", eps="2/255,8/255")
    assert list(results.frame["budget_text"]) == ["2/255", "8/255"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_eval": -1}, "n_eval must be a positive integer"),
        ({"n_eval": 1.5}, "n_eval must be a positive integer"),
        ({"eps": [3]}, "did you mean 3/255"),
    ],
)
def test_bad_options_are_usage_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        _evaluate(TinyNet(), _tensors(), **kwargs)


def test_a_factory_without_training_data_is_refused_before_anything_runs() -> None:
    with pytest.raises(UsageError, match="no training split"):
        _evaluate(lambda in_channels, num_classes: TinyNet(in_channels, num_classes), _tensors())


def test_a_one_logit_model_is_refused() -> None:
    one_logit = nn.Sequential(nn.Flatten(), nn.Linear(256, 1))
    with pytest.raises(UsageError, match="returns one logit per sample"):
        _evaluate(one_logit, _tensors())


def test_load_results_names_the_experiment_of_a_run(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    torch.manual_seed(0)
    results = _evaluate(TinyNet(), _tensors(), tracking_uri=uri, experiment="mine", attacks=["fgsm"])
    with pytest.raises(UsageError, match="belongs to experiment 'mine'"):
        medbench.load_results(experiment="other", run_id=results.parent_run_id, tracking_uri=uri)
