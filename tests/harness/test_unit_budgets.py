"""``--eps 5HU``: budgets in the dataset's intensity unit, converted to [0, 1] and logged both ways."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from medbench.cli import main

PHANTOM3D = [
    "--dataset", "phantom3d", "--model", "unetr-tiny", "--defense", "none", "--n-eval", "1", "--epochs", "0",
    "--set", "dataset.phantom3d.image_size=16", "--set", "dataset.phantom3d.n_train=2",
    "--set", "model.unetr-tiny.roi=16",
]  # fmt: skip


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def test_eps_in_hounsfield_units_on_phantom3d(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["run", *PHANTOM3D, "--attack", "fgsm,gn", "--eps", "5HU,10HU", "--experiment", "smoke"]
    code, out, err = _run([*args, "--tracking-uri", uri, "--json"], capsys)
    assert code == 0, err
    assert "eps=5HU (3/255),10HU (6/255)" in " ".join(err.split())
    cells = json.loads(out)["cells"]
    assert {(c["attack"], c["budget_native"]) for c in cells} == {
        (a, b) for a in ("fgsm", "gn") for b in ("5HU", "10HU")
    }
    for cell in cells:
        hounsfield = float(cell["budget_native"].removesuffix("HU"))
        assert cell["budget"] == pytest.approx(hounsfield / 425), "phantom3d stands for -175..250 HU"
        if cell["attack"] == "fgsm":
            assert cell["metrics"]["linf_max"] <= cell["budget"] + 1e-6
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    params = [r.data.params for r in runs if r.data.tags.get("medbench.role") == "cell"]
    assert {(p["budget_native"], float(p["budget"])) for p in params if p["attack"] == "fgsm"} == {
        ("5HU", 5 / 425),
        ("10HU", 10 / 425),
    }
    parent = next(r for r in runs if r.data.tags.get("medbench.role") == "matrix")
    assert parent.data.params["budgets.fgsm"] == "5HU (3/255),10HU (6/255)"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "phantom2d", "--attack", "pgd", "--eps", "5HU"], "declares no intensity window"),
        ([*PHANTOM3D, "--attack", "pgd", "--eps", "5mm"], "intensity window in HU, not mm"),
        (
            [*PHANTOM3D, "--attack", "vafa", "--budget", "q_max=20HU"],
            "q_max of attack 'vafa' is not an intensity",
        ),
    ],
)
def test_unit_budgets_that_cannot_apply_are_usage_errors(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code, _, err = _run(["run", *args, "--tracking-uri", uri], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "mlflow.db").exists() or not MlflowClient(uri).search_experiments(
        filter_string="name = 'smoke'"
    ), "nothing is recorded"


@pytest.mark.parametrize("eps", ["3", "2/255,3", "300/255"])
def test_an_intensity_budget_above_one_is_a_usage_error_with_a_did_you_mean(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], eps: str
) -> None:
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    code, _, err = _run(["run", "--n-eval", "8", "--eps", eps, "--tracking-uri", uri], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "above 1 on the [0, 1] intensity scale" in err
    assert "did you mean 3/255?" in err or "did you mean 1.17647/255?" in err
    assert MlflowClient(uri).search_experiments(filter_string="name != 'Default'") == []


def test_a_run_that_changes_the_default_suite_gets_its_own_experiment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDBENCH_CACHE_DIR", str(tmp_path / "cache"))
    tiny = ["--set", "dataset.phantom2d.image_size=16", "--n-eval", "8", "--epochs", "1", "--defense", "none"]
    tiny += [
        "--attack",
        "fgsm",
        "--eps",
        "8/255",
        "--json",
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'm.db'}",
    ]
    code, out, err = _run(["run", *tiny], capsys)
    assert code == 0, err
    experiment = json.loads(out)["experiment"]
    assert experiment.startswith("phantom2d-smallcnn-") and experiment != "smoke"
    code, out, _ = _run(["run", *tiny], capsys)
    assert json.loads(out)["experiment"] == experiment, "the same options: the same experiment (resume)"
    code, out, _ = _run(["run", *tiny, "--seed", "1"], capsys)
    assert json.loads(out)["experiment"] != experiment
    code, out, _ = _run(["run", "--suite", "smoke", *tiny], capsys)
    assert json.loads(out)["experiment"] == "smoke", "a named suite keeps its experiment"
