"""Sanity checks over a whole budget range and between FGSM and its iterative versions."""

from __future__ import annotations

from medbench.leaderboard.records import CellRecord
from medbench.measuring.sanity import check_cells

HEALTHY = {
    "sanity_zero_gradients": 0.0,
    "sanity_nonfinite_gradients": 0.0,
    "sanity_unbounded_accuracy": 0.0,
    "sanity_chance_accuracy": 0.5,
    "clean_accuracy": 0.9,
    "clean_auc": 0.95,
}


def cell(attack: str, budget: int, robust: float, defense: str = "none") -> CellRecord:
    return CellRecord(
        run_id=f"{defense}-{attack}-{budget}",
        parent_run_id="p",
        model="resnet18",
        defense=defense,
        attack=attack,
        budget_name="eps",
        budget=budget / 255,
        threat_model="linf",
        threat="direct",
        status="FINISHED",
        metrics={**HEALTHY, "robust_accuracy": robust},
        dataset="phantom2d",
        dataset_fingerprint="fp",
        seed=0,
        n_eval=256,
        start_time=budget,
    )


def test_a_rise_over_the_whole_range_is_flagged_not_only_between_neighbours() -> None:
    # resnet18/tc-glcm of the published board: 0.461 at 5/255, 0.496 at 7/255, each step small
    row = [cell("fgsm", 5, 0.461), cell("fgsm", 6, 0.475), cell("fgsm", 7, 0.496)]
    flags = [f for f in check_cells(row) if f.check == "non-monotone"]
    assert [f.cells for f in flags] == [("resnet18/none/fgsm@5/255", "resnet18/none/fgsm@7/255")]
    assert "rises from 0.461 to 0.496" in flags[0].message


def test_an_iterative_attack_no_stronger_than_fgsm_is_flagged() -> None:
    # both reformer rows of the published denoising-cnn board: BIM exactly equal to FGSM
    row = [cell("fgsm", 8, 0.480, "reformer"), cell("bim", 8, 0.480, "reformer")]
    (flag,) = [f for f in check_cells(row) if f.check == "iterative-not-stronger"]
    assert flag.row == "resnet18/reformer" and "leaves robust accuracy 0.480, exactly fgsm's" in flag.message
    healthy = [cell("fgsm", 8, 0.48), cell("bim", 8, 0.30)]
    noise = [cell("fgsm", 8, 0.385), cell("bim", 8, 0.400)]  # within the tolerance: sampling noise
    broken_to_zero = [cell("fgsm", 8, 0.0), cell("bim", 8, 0.0)]
    for row in (healthy, noise, broken_to_zero):
        assert "iterative-not-stronger" not in [f.check for f in check_cells(row)]
