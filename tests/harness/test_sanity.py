"""Sanity flags: each check is raised by a crafted situation and stays silent on a healthy run.

Three levels:

* cell records built by hand (:mod:`medbench.measuring.sanity` alone, no model, no MLflow);
* the gradient checks of :mod:`medbench.measuring.gradient_checks` on real ART estimators of tiny
  hand-weighted models: healthy, with a non-differentiable quantisation step, and with a
  ``torch.where`` whose unused branch gives NaN gradients while the logits stay finite;
* ``medbench run`` end to end on a small phantom: a healthy matrix, the same model under
  deliberately weakened iterative attacks, and behind ``jpeg[gradient=blocked]``. The CLI
  tests share one model cache (trained once, whichever test runs first).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from mlflow.tracking import MlflowClient
from torch import nn
from torch.utils.data import TensorDataset

from medbench.api import DatasetBundle, DefendedModel, Normalization
from medbench.cli import main
from medbench.leaderboard.records import CellRecord
from medbench.measuring import gradient_checks
from medbench.measuring.gradient_checks import GROUP_CHECK_METRICS, group_checks, unbounded_accuracy
from medbench.measuring.sanity import (
    CHECKS,
    Flag,
    check_cells,
    check_row,
    is_at_chance,
    needs_adaptive_evaluation,
    primary_metric,
    tolerance,
)
from medbench.wrapping.estimators import classifier_estimator, predict_logits

CPU = torch.device("cpu")

# ---------------------------------------------------------------------- crafted cell records

THREAT_MODELS = {"gn": "noise", "cw-l2": "l2-minimal", "deepfool": "l2-minimal"}
BUDGET_NAMES = {"noise": "sigma", "l2-minimal": "confidence"}
HEALTHY_GROUP = {
    "sanity_zero_gradients": 0.0,
    "sanity_nonfinite_gradients": 0.0,
    "sanity_unbounded_accuracy": 0.0,
    "sanity_chance_accuracy": 0.5,
}


def record(
    attack: str,
    budget: float,
    robust: float | None,
    *,
    model: str = "smallcnn",
    defense: str = "none",
    n_eval: int = 100,
    threat: str = "direct",
    surrogate: str | None = None,
    metric: str = "accuracy",
    metrics: dict[str, float] | None = None,
    start_time: int = 0,
) -> CellRecord:
    """A finished cell with ``robust_<metric> = robust`` and healthy group checks."""
    threat_model = THREAT_MODELS.get(attack, "linf")
    values = {**HEALTHY_GROUP, f"clean_{metric}": 0.9, **(metrics or {})}
    if robust is not None:
        values[f"robust_{metric}"] = robust
    return CellRecord(
        run_id=f"{model}-{defense}-{attack}-{budget:.6f}-{threat}",
        parent_run_id="parent",
        model=model,
        defense=defense,
        attack=attack,
        budget_name=BUDGET_NAMES.get(threat_model, "eps"),
        budget=budget,
        threat_model=threat_model,
        threat=threat,
        status="FINISHED",
        metrics=values,
        dataset="phantom2d",
        dataset_fingerprint="fp",
        seed=0,
        n_eval=n_eval,
        start_time=start_time,
        surrogate=surrogate,
        task="segmentation" if metric == "dice" else "classification",
    )


def healthy_row(**fields: Any) -> list[CellRecord]:
    """Every attack weaker than its rivals the way a working evaluation has them."""
    robust = {
        ("fgsm", 2): 0.50,
        ("fgsm", 8): 0.30,
        ("bim", 2): 0.45,
        ("bim", 8): 0.22,
        ("pgd", 2): 0.44,
        ("pgd", 8): 0.20,
        ("gn", 2): 0.88,
        ("gn", 8): 0.80,
        ("square", 2): 0.52,
        ("square", 8): 0.35,
        ("cw-l2", 0): 0.05,
    }
    return [record(attack, budget / 255, value, **fields) for (attack, budget), value in robust.items()]


def checks_of(flags: list[Flag]) -> list[str]:
    return [flag.check for flag in flags]


def test_a_healthy_row_raises_no_flag() -> None:
    assert check_cells(healthy_row()) == []
    assert check_cells(healthy_row(n_eval=20)) == []


def test_non_monotone_names_the_two_cells_of_the_rising_curve() -> None:
    row = [*healthy_row(), record("mifgsm", 2 / 255, 0.40), record("mifgsm", 8 / 255, 0.55)]
    (flag,) = check_row(row, "accuracy")
    assert flag.check == "non-monotone"
    assert flag.row == "smallcnn/none"
    assert flag.cells == ("smallcnn/none/mifgsm@2/255", "smallcnn/none/mifgsm@8/255")
    assert "mifgsm" in flag.message and "0.400 to 0.550" in flag.message


def test_non_monotone_compares_neighbouring_budgets_in_budget_order() -> None:
    # logged out of order; the rise is between 2/255 and 4/255 only
    row = [record("pgd", 8 / 255, 0.10), record("pgd", 4 / 255, 0.50), record("pgd", 2 / 255, 0.30)]
    (flag,) = check_cells(row)
    assert flag.cells == ("smallcnn/none/pgd@2/255", "smallcnn/none/pgd@4/255")


@pytest.mark.parametrize(
    ("n_eval", "rise", "fires"),
    [
        (100, 0.015, False),  # tolerance 0.02
        (100, 0.03, True),
        (20, 0.045, False),  # tolerance 1/20 = 0.05: one sample
        (20, 0.06, True),
    ],
)
def test_non_monotone_tolerance_is_one_sample_but_at_least_two_points(
    n_eval: int, rise: float, fires: bool
) -> None:
    row = [record("pgd", 2 / 255, 0.40, n_eval=n_eval), record("pgd", 8 / 255, 0.40 + rise, n_eval=n_eval)]
    assert checks_of(check_cells(row)) == (["non-monotone"] if fires else [])


def test_tolerance() -> None:
    assert tolerance([record("pgd", 0.1, 0.1, n_eval=1000)]) == 0.02
    assert tolerance([record("pgd", 0.1, 0.1, n_eval=1000), record("gn", 0.1, 0.1, n_eval=10)]) == 0.1
    assert tolerance([record("pgd", 0.1, 0.1, n_eval=0)]) == 0.02
    assert tolerance([]) == 0.02


def test_non_monotone_ignores_minimal_perturbation_attacks() -> None:
    # C&W's and DeepFool's budgets (confidence, overshoot) are no ball around the input
    row = [
        record("cw-l2", 0.0, 0.05),
        record("cw-l2", 5.0, 0.40),
        record("deepfool", 0.02, 0.0),
        record("deepfool", 0.1, 0.3),
    ]
    assert check_cells(row) == []


def test_non_monotone_keeps_direct_and_transfer_curves_apart() -> None:
    row = [
        record("pgd", 2 / 255, 0.30),
        record("pgd", 8 / 255, 0.10),
        record("pgd", 2 / 255, 0.60, threat="transfer", surrogate="resnet18"),
        record("pgd", 8 / 255, 0.50, threat="transfer", surrogate="resnet18"),
    ]
    assert check_cells(row) == []
    rising = [*row[:2], record("pgd", 8 / 255, 0.70, threat="transfer", surrogate="resnet18")]
    rising.insert(2, row[2])
    (flag,) = check_cells(rising)
    assert flag.check == "non-monotone"
    assert flag.cells == (
        "smallcnn/none/pgd@2/255 [transfer from resnet18]",
        "smallcnn/none/pgd@8/255 [transfer from resnet18]",
    )


def test_single_step_stronger_names_fgsm_and_its_strongest_iterative_version() -> None:
    row = [
        record("fgsm", 2 / 255, 0.50),
        record("pgd", 2 / 255, 0.49),  # within tolerance at 2/255
        record("fgsm", 8 / 255, 0.20),
        record("bim", 8 / 255, 0.45),
        record("pgd", 8 / 255, 0.40),
        record("mifgsm", 8 / 255, 0.42),
        record("fgsm", 4 / 255, 0.01),  # no iterative attack at 4/255: nothing to compare
    ]
    (flag,) = [f for f in check_cells(row) if f.check == "single-step-stronger"]
    assert flag.row == "smallcnn/none"
    assert flag.cells == ("smallcnn/none/fgsm@8/255", "smallcnn/none/pgd@8/255")
    assert "0.200" in flag.message and "pgd's 0.400" in flag.message


def test_single_step_stronger_stays_silent_within_tolerance() -> None:
    row = [record("fgsm", 8 / 255, 0.385), record("pgd", 8 / 255, 0.40)]
    assert check_cells(row) == []
    assert checks_of(check_cells([record("fgsm", 8 / 255, 0.375), row[1]])) == ["single-step-stronger"]


def test_single_step_stronger_compares_direct_cells_only() -> None:
    row = [
        record("fgsm", 8 / 255, 0.20, threat="transfer", surrogate="resnet18"),
        record("pgd", 8 / 255, 0.40),
    ]
    assert "single-step-stronger" not in checks_of(check_cells(row))


def test_noise_stronger_needs_noise_to_beat_every_gradient_attack_at_sigma_equal_eps() -> None:
    row = [
        record("gn", 8 / 255, 0.30),
        record("fgsm", 8 / 255, 0.50),
        record("pgd", 8 / 255, 0.40),
        record("square", 8 / 255, 0.10),  # a black box is no gradient attack: not a rival
        record("gn", 2 / 255, 0.85),
        record("pgd", 2 / 255, 0.87),  # within tolerance
    ]
    flags = check_cells(row)
    (flag,) = [f for f in flags if f.check == "noise-stronger"]
    assert flag.cells == ("smallcnn/none/gn@8/255", "smallcnn/none/pgd@8/255")
    assert "random noise" in flag.message
    # a gradient attack that does beat the noise: the evaluation is not weak
    working = [*row[:3], record("bim", 8 / 255, 0.25)]
    assert "noise-stronger" not in checks_of(check_cells(working))
    # noise against black boxes only: no gradient attack to compare with
    assert check_cells([record("gn", 8 / 255, 0.30), record("square", 8 / 255, 0.60)]) == []


@pytest.mark.parametrize("attack", ["square", "hsj"])
def test_black_box_stronger_fires_for_score_and_decision_based_attacks(attack: str) -> None:
    row = [
        record(attack, 8 / 255, 0.10),
        record("fgsm", 8 / 255, 0.50),
        record("pgd", 8 / 255, 0.40),
        record(attack, 2 / 255, 0.60),
        record("pgd", 2 / 255, 0.61),
    ]
    (flag,) = check_cells(row)
    assert flag.check == "black-box-stronger"
    assert flag.cells == (f"smallcnn/none/{attack}@8/255", "smallcnn/none/pgd@8/255")
    assert "black box" in flag.message


def test_black_box_stronger_counts_transfer_cells_as_black_box() -> None:
    transfer = record("fgsm", 8 / 255, 0.10, threat="transfer", surrogate="resnet18")
    row = [transfer, record("fgsm", 8 / 255, 0.50), record("pgd", 8 / 255, 0.40)]
    (flag,) = check_cells(row)
    assert flag.check == "black-box-stronger"
    assert flag.cells == (
        "smallcnn/none/fgsm@8/255 [transfer from resnet18]",
        "smallcnn/none/pgd@8/255",
    )
    # a transfer run has no direct white-box cell to compare with
    assert check_cells([transfer, record("pgd", 8 / 255, 0.40, threat="transfer", surrogate="x")]) == []


def test_flags_are_per_row_in_first_seen_order() -> None:
    weak = [record("fgsm", 8 / 255, 0.2, defense="jpeg"), record("pgd", 8 / 255, 0.4, defense="jpeg")]
    other = [record("gn", 8 / 255, 0.3, model="resnet18"), record("pgd", 8 / 255, 0.5, model="resnet18")]
    flags = check_cells([*healthy_row(), *weak, *other])
    assert [(f.row, f.check) for f in flags] == [
        ("smallcnn/jpeg", "single-step-stronger"),
        ("resnet18/none", "noise-stronger"),
    ]
    # cells of another row are never a rival
    assert check_cells([weak[0], record("pgd", 8 / 255, 0.4, defense="none")]) == []


def test_primary_metric_follows_the_task() -> None:
    assert primary_metric(healthy_row()) == "accuracy"
    multilabel = [record("pgd", 0.1, 0.7, metric="auc", metrics={"label_flip_rate": 0.2})]
    assert primary_metric(multilabel) == "auc"
    assert primary_metric([record("pgd", 0.1, 0.5, metric="dice")]) == "dice"
    assert primary_metric([]) == "accuracy"


@pytest.mark.parametrize("metric", ["dice", "auc"])
def test_checks_read_the_primary_metric(metric: str) -> None:
    extra = {"label_flip_rate": 0.1} if metric == "auc" else {}
    row = [
        record("pgd", 2 / 255, 0.40, metric=metric, metrics=extra),
        record("pgd", 8 / 255, 0.60, metric=metric, metrics=extra),
    ]
    (flag,) = check_cells(row)
    assert flag.check == "non-monotone"
    assert f"robust {metric}" in flag.message
    # the accuracy a classification board would read is not there: nothing to compare
    assert check_row(row, "accuracy") == []


def test_flag_as_dict_is_json_data() -> None:
    flag = Flag("zero-gradients", "smallcnn/jpeg", "100% ...", ("a@1/255", "a@2/255"))
    data = flag.as_dict()
    assert data == {
        "check": "zero-gradients",
        "row": "smallcnn/jpeg",
        "message": "100% ...",
        "cells": ["a@1/255", "a@2/255"],
    }
    assert json.loads(json.dumps(data)) == data
    assert set(CHECKS) == {
        "non-monotone",
        "single-step-stronger",
        "noise-stronger",
        "black-box-stronger",
        "unbounded-above-chance",
        "iterative-not-stronger",
        "zero-gradients",
        "clean-at-chance",
    }


# ------------------------------------------------------- group checks, as logged on the cells


def group_row(**metrics: float) -> list[CellRecord]:
    return [
        record("fgsm", 8 / 255, 0.3, metrics=metrics),
        record("pgd", 8 / 255, 0.2, metrics=metrics),
    ]


def test_zero_gradients_flag_names_every_cell_of_the_row() -> None:
    (flag,) = check_cells(group_row(sanity_zero_gradients=0.25))
    assert flag.check == "zero-gradients"
    assert flag.cells == ("smallcnn/none/fgsm@8/255", "smallcnn/none/pgd@8/255")
    assert flag.message == "25% of the checked samples have an all-zero input gradient"
    (flag,) = check_cells(group_row(sanity_zero_gradients=0.5, sanity_nonfinite_gradients=0.25))
    assert "50% of the checked samples have an all-zero input gradient" in flag.message
    assert "25%" in flag.message and "NaN or infinite" in flag.message


def test_nonfinite_gradients_alone_raise_the_zero_gradients_flag() -> None:
    (flag,) = check_cells(group_row(sanity_nonfinite_gradients=1.0))
    assert flag.check == "zero-gradients"
    assert flag.message == "100% of the checked samples have a NaN or infinite input gradient"


@pytest.mark.parametrize("older_first", [True, False])
def test_cells_without_the_group_metrics_never_hide_a_flag(older_first: bool) -> None:
    """A row of the leaderboard may mix cells of several runs; one that did not log the checks
    (an older run, or checks that failed) is skipped wherever it comes in the row."""
    older = record("bim", 8 / 255, 0.25, metrics={name: math.nan for name in GROUP_CHECK_METRICS})
    for metrics, check in (
        ({"sanity_zero_gradients": 1.0}, "zero-gradients"),
        ({"sanity_nonfinite_gradients": 0.5}, "zero-gradients"),
        ({"sanity_unbounded_accuracy": 0.9}, "unbounded-above-chance"),
    ):
        row = group_row(**metrics)
        row = [older, *row] if older_first else [*row, older]
        assert checks_of(check_cells(row)) == [check]


@pytest.mark.parametrize(
    ("unbounded", "chance", "n_eval", "fires"),
    [
        (0.0, 0.5, 100, False),
        (0.515, 0.5, 100, False),  # within 0.02
        (17 / 32, 0.5, 256, False),  # one sample of the 32 checked ones
        (0.54, 0.5, 256, True),
        (0.29, 0.25, 20, False),  # within 1/20
        (0.31, 0.25, 20, True),
        (0.9, 0.0, 100, True),  # multi-label: chance is 0
        (math.nan, math.nan, 100, False),  # segmentation: not measured
    ],
)
def test_unbounded_above_chance(unbounded: float, chance: float, n_eval: int, fires: bool) -> None:
    row = [
        record(
            a,
            8 / 255,
            robust,  # PGD a little stronger than FGSM, as in a working evaluation
            n_eval=n_eval,
            metrics={
                "sanity_unbounded_accuracy": unbounded,
                "sanity_chance_accuracy": chance,
            },
        )
        for a, robust in (("fgsm", 0.1), ("pgd", 0.09))
    ]
    flags = check_cells(row)
    assert checks_of(flags) == (["unbounded-above-chance"] if fires else [])
    if fires:
        assert flags[0].cells == ("smallcnn/none/fgsm@8/255", "smallcnn/none/pgd@8/255")
        assert f"is {unbounded:.3f}, above chance ({chance:.3f})" in flags[0].message


@pytest.mark.parametrize(
    ("accuracy", "auc", "chance", "n_eval", "fires"),
    [
        (0.9, 0.95, 0.5, 100, False),
        (0.539, 0.438, 0.5, 256, True),  # collapsed to the majority class: 54% right, AUC below 0.5
        (0.461, 0.5, 0.5, 256, True),  # collapsed to the minority class: a constant score
        (0.465, 0.59, 0.5, 256, True),  # some ranking, but worse than a coin as a classifier
        (0.515, math.nan, 0.5, 100, True),  # within 0.02 of chance
        (0.53, math.nan, 0.5, 100, False),
        (0.6, 0.515, 0.5, 100, True),  # the AUC alone
        (0.3, math.nan, 0.25, 100, False),  # four classes
        (0.26, math.nan, 0.25, 100, True),
        (0.1, 0.9, 0.0, 100, False),  # multi-label: exact-match accuracy has no chance level here
        (0.1, 0.5, 0.0, 100, True),
        (0.4, math.nan, math.nan, 100, False),  # no gradient checks logged: no chance level known
    ],
)
def test_clean_at_chance(accuracy: float, auc: float, chance: float, n_eval: int, fires: bool) -> None:
    row = [
        record(
            a,
            8 / 255,
            accuracy - step,  # PGD a little stronger than FGSM, as in a working evaluation
            n_eval=n_eval,
            metrics={"clean_accuracy": accuracy, "clean_auc": auc, "sanity_chance_accuracy": chance},
        )
        for a, step in (("fgsm", 0.0), ("pgd", 0.01))
    ]
    flags = check_cells(row)
    assert checks_of(flags) == (["clean-at-chance"] if fires else [])
    assert is_at_chance(flags) is fires and not needs_adaptive_evaluation(flags)
    if fires:
        assert flags[0].cells == ("smallcnn/none/fgsm@8/255", "smallcnn/none/pgd@8/255")
        assert "has not learned the task" in flags[0].message


def test_clean_at_chance_is_not_checked_for_segmentation() -> None:
    row = [
        record(a, 8 / 255, 0.0, metric="dice", metrics={"clean_dice": 0.0, "clean_accuracy": 0.0})
        for a in ("fgsm", "pgd")
    ]
    row = [CellRecord(**{**c.__dict__, "task": "segmentation"}) for c in row]
    assert "clean-at-chance" not in checks_of(check_cells(row))


def test_an_evaluation_flag_and_the_model_flag_together() -> None:
    flags = check_cells(group_row(sanity_zero_gradients=1.0, clean_accuracy=0.5, clean_auc=0.5))
    assert sorted(checks_of(flags)) == ["clean-at-chance", "zero-gradients"]
    assert is_at_chance(flags) and needs_adaptive_evaluation(flags)


def test_cells_without_group_metrics_raise_no_group_flag() -> None:
    row = [
        record("fgsm", 8 / 255, 0.3, metrics={name: math.nan for name in GROUP_CHECK_METRICS}),
        record("pgd", 8 / 255, 0.2, metrics={name: math.nan for name in GROUP_CHECK_METRICS}),
    ]
    assert check_cells(row) == []


# ------------------------------------------------------------- group checks on real models

SIDE = 8


def two_level_bundle(n: int = 32, multilabel: bool = False) -> DatasetBundle:
    """Class 0: pixels in [0.2, 0.4]; class 1: pixels in [0.6, 0.8]; alternating labels."""
    generator = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 2
    x = 0.3 + 0.4 * y.view(-1, 1, 1, 1) + 0.2 * (torch.rand(n, 1, SIDE, SIDE, generator=generator) - 0.5)
    labels = nn.functional.one_hot(y, 2).float() if multilabel else y
    split = TensorDataset(x, labels)
    return DatasetBundle(
        train=split,
        val=split,
        test=split,
        class_names=("dark", "bright"),
        input_shape=(1, SIDE, SIDE),
        multilabel=multilabel,
    )


class Quantize(nn.Module):
    """A non-differentiable step: rounds its input to quarters (zero gradient almost everywhere)."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.round(z * 4) / 4


class MaskedSqrt(nn.Module):
    """The identity forwards; backwards, NaN wherever ``z > 0``.

    ``torch.where`` passes a zero gradient to its unused branch, and ``0 · d√u/du`` is NaN
    where ``u < 0``: the classic masked-``sqrt`` bug. The logits stay finite.
    """

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.where(z < 100, z, torch.sqrt(-z))


def mean_brightness_model(*front: nn.Module) -> nn.Module:
    """Logits ``(-m, m)`` with ``m`` the mean normalised pixel: right on every sample of the bundle."""
    linear = nn.Linear(SIDE * SIDE, 2, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.stack([-torch.ones(SIDE * SIDE), torch.ones(SIDE * SIDE)]) / SIDE**2)
    return nn.Sequential(*front, nn.Flatten(), linear)


def estimator_of(model: nn.Module, bundle: DatasetBundle) -> Any:
    return classifier_estimator(DefendedModel(model, Normalization((0.5,), (0.25,))), bundle, CPU)


def run_group_checks(model: nn.Module, multilabel: bool = False, task: str = "classification") -> dict:
    bundle = two_level_bundle(multilabel=multilabel)
    estimator = estimator_of(model, bundle)
    x, y = bundle.test.tensors
    logits = predict_logits(estimator, x)
    assert torch.isfinite(logits).all()
    assert (logits.argmax(dim=1) == torch.arange(len(x)) % 2).all(), "the model is right on every input"
    result = group_checks(estimator, x, y, task=task, multilabel=multilabel)
    assert set(result) == set(GROUP_CHECK_METRICS)
    return result


def cells_with(result: dict[str, float]) -> list[CellRecord]:
    return [
        record("fgsm", 8 / 255, 0.2, n_eval=32, metrics=result),
        record("pgd", 8 / 255, 0.1, n_eval=32, metrics=result),
    ]


def test_group_checks_are_silent_on_a_healthy_model() -> None:
    result = run_group_checks(mean_brightness_model())
    assert result == {
        "sanity_zero_gradients": 0.0,
        "sanity_nonfinite_gradients": 0.0,
        "sanity_unbounded_accuracy": 0.0,
        "sanity_chance_accuracy": 0.5,
    }
    assert check_cells(cells_with(result)) == []


def test_a_non_differentiable_step_gives_zero_gradients_and_an_unbounded_attack_that_fails() -> None:
    result = run_group_checks(mean_brightness_model(Quantize()))
    assert result["sanity_zero_gradients"] == 1.0
    assert result["sanity_nonfinite_gradients"] == 0.0
    # no gradient, no step: the model stays right on every sample
    assert result["sanity_unbounded_accuracy"] == 1.0
    assert result["sanity_unbounded_accuracy"] > result["sanity_chance_accuracy"] == 0.5
    assert checks_of(check_cells(cells_with(result))) == ["zero-gradients", "unbounded-above-chance"]


class Band(nn.Module):
    """Logits ``(0, 8·(1 − ((m − 0.525) / 0.025)²))`` of the mean pixel ``m``: class 1 only for
    ``m`` in the narrow band (0.5, 0.55), class 0 on both sides of it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bump = 8 * (1 - ((x.mean(dim=(1, 2, 3)) - 0.525) / 0.025) ** 2)
        return torch.stack([torch.zeros_like(bump), bump], dim=1)


def test_the_unbounded_attack_does_not_overshoot_a_narrow_wrong_class_region() -> None:
    """Flat images of mean 0.45 (class 0) must be walked into the band of class 1: a large fixed
    step jumps over it and back (0.45, 0.60, 0.45...), as 10 steps of 0.15 did."""
    x = torch.full((4, 1, SIDE, SIDE), 0.45)
    y = torch.zeros(4, dtype=torch.int64)
    bundle = DatasetBundle(
        train=TensorDataset(x, y),
        val=TensorDataset(x, y),
        test=TensorDataset(x, y),
        class_names=("outside", "band"),
        input_shape=(1, SIDE, SIDE),
    )
    estimator = classifier_estimator(DefendedModel(Band(), Normalization((0.0,), (1.0,))), bundle, CPU)
    assert (predict_logits(estimator, x).argmax(dim=1) == 0).all()
    assert unbounded_accuracy(estimator, x, y, multilabel=False) == 0.0


def test_nan_gradients_behind_finite_logits_are_counted() -> None:
    result = run_group_checks(mean_brightness_model(MaskedSqrt()))
    # NaN for the bright class (normalised pixels > 0), finite for the dark one
    assert result["sanity_nonfinite_gradients"] == 0.5
    assert result["sanity_zero_gradients"] == 0.0, "a NaN gradient is not counted as a zero one"
    (flag, *_) = check_cells(cells_with(result))
    assert flag.check == "zero-gradients"
    assert "50%" in flag.message and "NaN or infinite" in flag.message


def test_group_checks_chance_level_for_multilabel_data_and_none_for_segmentation() -> None:
    result = run_group_checks(mean_brightness_model(), multilabel=True)
    assert result["sanity_chance_accuracy"] == 0.0
    assert result["sanity_zero_gradients"] == result["sanity_nonfinite_gradients"] == 0.0
    segmentation = run_group_checks(mean_brightness_model(Quantize()), task="segmentation")
    assert segmentation["sanity_zero_gradients"] == 1.0
    assert math.isnan(segmentation["sanity_unbounded_accuracy"])
    assert math.isnan(segmentation["sanity_chance_accuracy"])


def test_group_checks_look_at_the_first_check_samples_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gradient_checks, "CHECK_SAMPLES", 4)
    bundle = two_level_bundle()
    estimator = estimator_of(mean_brightness_model(MaskedSqrt()), bundle)
    x, y = bundle.test.tensors
    dark_first = torch.argsort(y, stable=True)  # 16 dark samples (finite gradients) first
    result = group_checks(estimator, x[dark_first], y[dark_first], task="classification", multilabel=False)
    assert result["sanity_nonfinite_gradients"] == 0.0


# ------------------------------------------------------------------------- the CLI, end to end

SPEC = """
name: sanity
dataset: phantom2d
models: [smallcnn]
defenses: [none]
attacks: [fgsm, pgd, gn]
budgets: {eps: [2/255, 8/255], sigma: [2/255, 8/255]}
n_eval: 64
seed: 0
training: {epochs: 5, batch_size: 32, lr: 0.001}
settings:
  dataset:
    phantom2d: {image_size: 16, n_samples: 1000}
"""
"""A smallcnn that trains in seconds to ~85 % on the 16×16 phantom (FGSM at 8/255 takes it to ~20 %)."""

WEAKENED = [
    "--attack",
    "fgsm,pgd,bim,gn",
    # one step of 0.0001: PGD is its random start, BIM (no random start) does nothing
    "--set",
    "attack.pgd.max_iter=1",
    "--set",
    "attack.pgd.eps_step=0.0001",
    "--set",
    "attack.bim.max_iter=1",
    "--set",
    "attack.bim.eps_step=0.0001",
    # FGSM against PGD at 2/255; noise against BIM alone at 8/255
    "--budget",
    "fgsm=2/255",
    "--budget",
    "pgd=2/255",
    "--budget",
    "bim=8/255",
    "--budget",
    "gn=8/255",
]


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One model cache for the CLI tests: the phantom's smallcnn is trained once."""
    return tmp_path_factory.mktemp("model-cache")


def medbench_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str, spec_text: str = SPEC
) -> tuple[dict[str, Any], str, str]:
    """``medbench run --spec SPEC --json ARGS``: the JSON document, stderr (unwrapped), the store's URI."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_text, encoding="utf-8")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--spec", str(spec), "--tracking-uri", uri, "--json", *args])
    captured = capsys.readouterr()
    assert exit_info.value.code in (0, None), captured.err
    return json.loads(captured.out), " ".join(captured.err.split()), uri


def parent_run(uri: str, document: dict[str, Any]) -> Any:
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(document["parent_run_id"])
    assert run.data.tags["medbench.role"] == "matrix"
    return run


def logged_sanity(uri: str, run_id: str, tmp_path: Path) -> list[dict[str, Any]]:
    client = MlflowClient(tracking_uri=uri)
    names = {artifact.path for artifact in client.list_artifacts(run_id)}
    assert {"sanity.json", "robustness_curves.png", "robustness_curves.svg"} <= names
    path = client.download_artifacts(run_id, "sanity.json", str(tmp_path))
    return json.loads(Path(path).read_text(encoding="utf-8"))


def test_a_healthy_matrix_raises_no_flag_and_logs_sanity_json_and_curves(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, model_cache: Path
) -> None:
    monkeypatch.setenv("MEDBENCH_CACHE_DIR", str(model_cache))
    document, err, uri = medbench_run(tmp_path, capsys)

    assert document["sanity"] == []
    assert "needs adaptive evaluation" not in err
    cells = document["cells"]
    assert len(cells) == 6 and all(c["status"] == "FINISHED" for c in cells)
    for cell in cells:
        metrics = cell["metrics"]
        assert metrics["clean_accuracy"] >= 0.75, "the model must have learnt something"
        assert metrics["sanity_zero_gradients"] == metrics["sanity_nonfinite_gradients"] == 0.0
        assert metrics["sanity_unbounded_accuracy"] <= metrics["sanity_chance_accuracy"] == 0.5
    run = parent_run(uri, document)
    assert run.data.tags["medbench.needs_adaptive_evaluation"] == run.data.tags["medbench.at_chance"] == ""
    assert logged_sanity(uri, run.info.run_id, tmp_path) == []


def test_the_parent_runs_curves_follow_the_suites_ranking_metric(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, model_cache: Path
) -> None:
    from medbench.leaderboard import curves

    monkeypatch.setenv("MEDBENCH_CACHE_DIR", str(model_cache))
    drawn: list[str] = []
    real = curves.plot_robustness_curves

    def recording(cells: Any, metric: str, path: Path, title: str = "") -> list[Path]:
        drawn.append(metric)
        return real(cells, metric, path, title)

    monkeypatch.setattr(curves, "plot_robustness_curves", recording)
    document, _, uri = medbench_run(tmp_path, capsys, "--attack", "fgsm", spec_text=SPEC + "rank_by: auc\n")
    assert drawn == ["robust_auc"]
    assert document["sanity"] == []
    assert logged_sanity(uri, parent_run(uri, document).info.run_id, tmp_path) == []


def test_weakened_iterative_attacks_raise_single_step_and_noise_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, model_cache: Path
) -> None:
    monkeypatch.setenv("MEDBENCH_CACHE_DIR", str(model_cache))
    document, err, uri = medbench_run(tmp_path, capsys, *WEAKENED)

    robust = {c["attack"]: c["metrics"]["robust_accuracy"] for c in document["cells"]}
    flags = {flag["check"]: flag for flag in document["sanity"]}
    assert sorted(flags) == ["noise-stronger", "single-step-stronger"], (robust, flags)
    single = flags["single-step-stronger"]
    assert single["row"] == "smallcnn/none"
    assert single["cells"] == ["smallcnn/none/fgsm@2/255", "smallcnn/none/pgd@2/255"]
    assert robust["fgsm"] < robust["pgd"]
    noise = flags["noise-stronger"]
    assert noise["cells"] == ["smallcnn/none/gn@8/255", "smallcnn/none/bim@8/255"]
    assert robust["gn"] < robust["bim"]

    assert "smallcnn/none: needs adaptive evaluation (single-step-stronger): fgsm (single step)" in err
    assert "smallcnn/none: needs adaptive evaluation (noise-stronger): gn (random noise)" in err
    run = parent_run(uri, document)
    assert run.data.tags["medbench.needs_adaptive_evaluation"] == "smallcnn/none"
    assert logged_sanity(uri, run.info.run_id, tmp_path) == document["sanity"]


def test_a_blocked_gradient_defense_raises_zero_gradient_and_unbounded_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, model_cache: Path
) -> None:
    monkeypatch.setenv("MEDBENCH_CACHE_DIR", str(model_cache))
    row = "smallcnn/jpeg[gradient=blocked]"
    document, err, uri = medbench_run(
        tmp_path, capsys, "--defense", "none,jpeg[gradient=blocked]", "--attack", "fgsm", "--eps", "8/255"
    )

    blocked = next(c for c in document["cells"] if c["defense"] == "jpeg[gradient=blocked]")["metrics"]
    assert blocked["sanity_zero_gradients"] == 1.0
    assert blocked["sanity_unbounded_accuracy"] > blocked["sanity_chance_accuracy"]
    assert [(f["row"], f["check"]) for f in document["sanity"]] == [
        (row, "zero-gradients"),
        (row, "unbounded-above-chance"),
    ]
    for flag in document["sanity"]:
        assert flag["cells"] == [f"{row}/fgsm@8/255"]
    assert "100% of the checked samples have an all-zero input gradient" in document["sanity"][0]["message"]
    assert "needs adaptive evaluation (zero-gradients)" in err
    assert "needs adaptive evaluation (unbounded-above-chance)" in err
    run = parent_run(uri, document)
    assert run.data.tags["medbench.needs_adaptive_evaluation"] == row
    assert logged_sanity(uri, run.info.run_id, tmp_path) == document["sanity"]


def test_flag_lines_show_the_row_verbatim(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from medbench.engine.runner import MatrixRunner

    def flagged_run(runner: MatrixRunner) -> list[Any]:
        runner.plan.parent_run_id = "parent"
        runner.flags = [
            Flag("zero-gradients", "smallcnn/jpeg[gradient=blocked]", "100% [all] of them", ()),
            Flag("clean-at-chance", "smallcnn/dcnn[lambda_n=1]", "clean AUC 0.438 is at most chance", ()),
        ]
        return []

    class NoStore:
        def __init__(self, tracking_uri: str, experiment: str) -> None:
            self.tracking_uri = tracking_uri

    monkeypatch.setattr(MatrixRunner, "run", flagged_run)
    monkeypatch.setattr("medbench.recording.tracking.Tracker", NoStore)
    _, err, _ = medbench_run(tmp_path, capsys, "--attack", "fgsm")
    assert (
        "smallcnn/jpeg[gradient=blocked]: needs adaptive evaluation (zero-gradients): 100% [all] of them"
        in err
    )
    assert "smallcnn/dcnn[lambda_n=1]: at chance (clean-at-chance): clean AUC 0.438 is at most chance" in err


@pytest.mark.parametrize(
    ("accuracy", "majority", "balanced", "flagged"),
    [
        (0.56, 0.539, 0.55, True),  # the published denoising-cnn rows: barely above the majority rate
        (0.594, 0.539, 0.60, False),  # 152 of 256 against a rate of 0.539: p = 0.045, just above it
        (0.90, 0.539, 0.89, False),
        (0.80, 0.80, 0.50, True),  # a constant majority prediction on imbalanced data
        (0.75, 0.50, 0.75, False),
        (0.70, 0.55, 0.45, True),  # above the majority rate, yet worse than chance per class
    ],
)
def test_at_chance_is_the_majority_class_rate_and_balanced_accuracy(
    accuracy: float, majority: float, balanced: float, flagged: bool
) -> None:
    from scipy.stats import binomtest

    metrics = {
        "clean_accuracy": accuracy,
        "clean_auc": 0.8,
        "majority_rate": majority,
        "clean_balanced_accuracy": balanced,
        "sanity_chance_accuracy": 0.5,
    }
    row = [record(a, 8 / 255, 0.3, n_eval=256, metrics=metrics) for a in ("fgsm", "pgd")]
    at_chance = "clean-at-chance" in checks_of(check_cells(row))
    test = binomtest(round(accuracy * 256), 256, majority, alternative="greater").pvalue >= 0.05
    assert at_chance == (test or balanced <= 0.5 + 0.02)
    assert at_chance == flagged
