"""Inline plugin variants: ``dcnn[lambda_a=0]`` names one configuration in a matrix."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import Run

from medbench.building.defending import parse_variant, split_chain, variant_label
from medbench.cli import main
from medbench.config.spec import split_outside_brackets
from medbench.errors import UsageError


def test_lists_split_outside_brackets_only() -> None:
    assert split_outside_brackets("none, dcnn[lambda_n=1,lambda_a=0],tc", ",") == [
        "none",
        "dcnn[lambda_n=1,lambda_a=0]",
        "tc",
    ]
    assert split_chain("reformer+dcnn[source=a+b]") == ["reformer", "dcnn[source=a+b]"]


def test_variants_parse_to_a_name_and_string_overrides() -> None:
    assert parse_variant("dcnn") == ("dcnn", {})
    assert parse_variant("dcnn[ lambda_n = 1, lambda_a=0 ]") == ("dcnn", {"lambda_n": "1", "lambda_a": "0"})
    assert variant_label("dcnn", {"lambda_n": "1", "lambda_a": "0"}) == "dcnn[lambda_n=1,lambda_a=0]"


@pytest.mark.parametrize("bad", ["dcnn[lambda_n=1", "dcnn]", "[a=1]", "dcnn[lambda_n]", "dcnn[a=1][b=2]"])
def test_malformed_variants_are_usage_errors(bad: str) -> None:
    with pytest.raises(UsageError, match="malformed"):
        parse_variant(bad)


def _cell_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], *, defense: str, attack: str, eps: str
) -> list[Run]:
    """Run a tiny matrix through the CLI and return its cell runs from MLflow."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tiny = ["--dataset", "phantom2d", "--set", "dataset.phantom2d.n_samples=240"]
    tiny += [
        "--set",
        "dataset.phantom2d.image_size=32",
        "--epochs",
        "1",
        "--n-eval",
        "16",
        "--experiment",
        "smoke",
    ]
    with pytest.raises(SystemExit) as exit_info:
        main(["run", *tiny, "--defense", defense, "--attack", attack, "--eps", eps, "--tracking-uri", uri])
    assert exit_info.value.code in (0, None), capsys.readouterr().err
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("smoke")
    assert experiment is not None
    return client.search_runs([experiment.experiment_id], filter_string="tags.`medbench.role` = 'cell'")


def test_two_variants_of_one_defense_run_side_by_side(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = _cell_runs(
        tmp_path, capsys, defense="at-fgsm[eps=2/255],at-fgsm[eps=4/255]", attack="fgsm", eps="2/255"
    )
    by_defense = {run.data.params["defense"]: run for run in runs}
    assert set(by_defense) == {"at-fgsm[eps=2/255]", "at-fgsm[eps=4/255]"}
    assert float(by_defense["at-fgsm[eps=2/255]"].data.params["defense.eps"]) == pytest.approx(2 / 255)
    assert float(by_defense["at-fgsm[eps=4/255]"].data.params["defense.eps"]) == pytest.approx(4 / 255)


def test_a_variant_with_an_unknown_setting_gets_a_suggestion(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--defense", "at-fgsm[epz=2/255]"])
    assert exit_info.value.code == 2
    assert "did you mean 'eps'" in capsys.readouterr().err


def test_chain_labels_show_the_settings_that_differ_from_the_defaults() -> None:
    from medbench.building.defending import chain_label
    from medbench_art.at_fgsm import FGSMAdversarialTraining
    from medbench_art.standard import StandardTraining

    chain = [FGSMAdversarialTraining().configured({"random_start": "true"})]
    assert chain_label(chain) == "at-fgsm[random_start=True]"
    assert chain_label([StandardTraining()]) == "none"


def test_two_variants_of_one_attack_run_side_by_side(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = _cell_runs(
        tmp_path, capsys, defense="none", attack="fgsm,pgd,pgd[max_iter=1,step_ratio=0.5]", eps="8/255"
    )
    by_attack = {run.data.params["attack"]: run for run in runs}
    assert set(by_attack) == {"fgsm", "pgd", "pgd[max_iter=1,step_ratio=0.5]"}
    assert by_attack["pgd"].data.params["attack.max_iter"] == "10"
    assert by_attack["pgd[max_iter=1,step_ratio=0.5]"].data.params["attack.max_iter"] == "1"
    keys = {run.data.tags["medbench.cell_key"] for run in runs}
    assert len(keys) == 3, "each variant is its own cell"
    variant, full = by_attack["pgd[max_iter=1,step_ratio=0.5]"], by_attack["pgd"]
    assert variant.data.metrics["robust_accuracy"] >= full.data.metrics["robust_accuracy"]


def test_attack_variants_get_the_same_errors_as_defense_variants(capsys: pytest.CaptureFixture[str]) -> None:
    for bad, message in (
        ("pgd[max_itr=3]", "did you mean 'max_iter'"),
        ("pgd[max_iter=3", "malformed"),
        ("pgd,pgd[]", "malformed"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(["run", "--attack", bad])
        assert exit_info.value.code == 2, bad
        assert message in capsys.readouterr().err, bad
