"""Robustness curves drawn from cell records alone (no training, no MLflow)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from medbench.leaderboard.curves import curve_points, plot_robustness_curves, robustness_figure
from medbench.leaderboard.records import CellRecord

CLEAN = {"none": 0.92, "at-pgd": 0.85}
"""Clean accuracy of each classification defense."""
ROBUST = {
    ("none", "fgsm"): {2: 0.40, 8: 0.10},
    ("none", "pgd"): {2: 0.30, 8: 0.02},
    ("at-pgd", "fgsm"): {2: 0.75, 8: 0.55},
    ("at-pgd", "pgd"): {2: 0.72, 8: 0.48},
}
"""Robust accuracy of each (defense, attack) at each budget (in /255)."""


def cell(
    defense: str,
    attack: str,
    budget: float,
    metrics: dict[str, float],
    *,
    model: str = "resnet18",
    budget_name: str = "eps",
    threat: str = "direct",
    task: str = "classification",
    **fields: Any,
) -> CellRecord:
    values: dict[str, Any] = {
        "run_id": f"{model}-{defense}-{attack}-{budget:.6f}-{threat}",
        "parent_run_id": "parent",
        "model": model,
        "defense": defense,
        "attack": attack,
        "budget_name": budget_name,
        "budget": budget,
        "threat_model": "white-box" if threat == "direct" else "transfer",
        "threat": threat,
        "status": "FINISHED",
        "metrics": metrics,
        "dataset": "medmnist-pneumonia" if task == "classification" else "msd-spleen",
        "dataset_fingerprint": "f00d",
        "seed": 0,
        "n_eval": 64,
        "start_time": 1_700_000_000_000,
        "task": task,
    }
    values.update(fields)
    return CellRecord(**values)


def classification_cells() -> list[CellRecord]:
    """2 defenses x 2 attacks x 2 budgets (8/255 listed before 2/255) and one transfer pgd cell."""
    cells = [
        cell(
            defense,
            attack,
            k / 255,
            {
                "clean_accuracy": CLEAN[defense],
                "robust_accuracy": ROBUST[(defense, attack)][k],
                "clean_auc": CLEAN[defense] + 0.03,
                "robust_auc": ROBUST[(defense, attack)][k] + 0.05,
            },
            budget_native=f"{k}/255",
        )
        for defense in CLEAN
        for attack in ("fgsm", "pgd")
        for k in (8, 2)
    ]
    transfer = cell(
        "at-pgd",
        "pgd",
        8 / 255,
        {"clean_accuracy": CLEAN["at-pgd"], "robust_accuracy": 0.70},
        threat="transfer",
        surrogate="densenet121/none",
    )
    return [*cells, transfer]


def segmentation_cells() -> list[CellRecord]:
    """A U-Net with two defenses under pgd at 2/255 and 8/255, with Dice and HD95."""
    dice = {"none": (0.88, {2: 0.61, 8: 0.20}), "at-pgd": (0.83, {2: 0.78, 8: 0.66})}
    hd95 = {"none": (4.0, {2: 12.5, 8: 31.0}), "at-pgd": (5.0, {2: 7.5, 8: 11.0})}
    return [
        cell(
            defense,
            "pgd",
            k / 255,
            {
                "clean_dice": dice[defense][0],
                "robust_dice": dice[defense][1][k],
                "clean_hd95": hd95[defense][0],
                "robust_hd95": hd95[defense][1][k],
            },
            model="unet",
            task="segmentation",
        )
        for defense in ("none", "at-pgd")
        for k in (2, 8)
    ]


def axes_by_title(fig: Any) -> dict[str, Any]:
    return {ax.get_title(): ax for ax in fig.get_axes()}


def test_curve_points_start_at_the_clean_metric_and_sort_budgets() -> None:
    points = curve_points(classification_cells(), "robust_accuracy")

    assert list(points) == ["fgsm", "pgd", "pgd (transfer)"]
    assert list(points["pgd"]) == ["resnet18/none", "resnet18/at-pgd"]
    for (defense, attack), robust in ROBUST.items():
        line = points[attack][f"resnet18/{defense}"]
        assert [budget for budget, _ in line] == pytest.approx([0.0, 2 / 255, 8 / 255])
        assert [value for _, value in line] == pytest.approx([CLEAN[defense], robust[2], robust[8]])
    assert points["pgd (transfer)"] == {"resnet18/at-pgd": [(0.0, 0.85), (pytest.approx(8 / 255), 0.70)]}


def test_curve_points_use_the_matching_clean_metric() -> None:
    points = curve_points(classification_cells(), "robust_auc")

    assert points["fgsm"]["resnet18/none"][0] == (0.0, pytest.approx(0.95))
    # the transfer cell logged no AUC: its panel is left out
    assert "pgd (transfer)" not in points


def test_curve_points_skip_nan_values_and_rows_without_the_metric() -> None:
    cells = [
        cell("none", "pgd", 8 / 255, {"clean_accuracy": 0.9, "robust_accuracy": 0.1}),
        cell("none", "pgd", 2 / 255, {"clean_accuracy": 0.9, "robust_accuracy": math.nan}),
        cell("none", "pgd", 4 / 255, {"clean_accuracy": math.nan, "robust_accuracy": 0.4}),
        *segmentation_cells(),
    ]
    points = curve_points(cells, "robust_accuracy")

    assert points == {"pgd": {"resnet18/none": [(0.0, 0.9), (4 / 255, 0.4), (8 / 255, 0.1)]}}
    assert curve_points(cells, "robust_lpips") == {}


def test_figure_has_one_panel_per_attack_and_one_line_per_defense() -> None:
    fig = robustness_figure(classification_cells(), "robust_accuracy", title="pneumonia")
    panels = axes_by_title(fig)

    assert sorted(panels) == ["fgsm", "pgd", "pgd (transfer)"]
    for attack in ("fgsm", "pgd"):
        lines = panels[attack].get_lines()
        assert [line.get_label() for line in lines] == ["none", "at-pgd"]
        assert all(line.get_marker() == "o" for line in lines)
    assert len(panels["pgd (transfer)"].get_lines()) == 1
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["none", "at-pgd"]
    assert fig.get_suptitle() == "pneumonia"
    # a row keeps its colour in every panel
    colours = {line.get_label(): line.get_color() for ax in panels.values() for line in ax.get_lines()}
    assert panels["pgd (transfer)"].get_lines()[0].get_color() == colours["at-pgd"]
    assert colours["none"] != colours["at-pgd"]


def test_eps_budgets_are_drawn_in_255ths_on_a_unit_accuracy_axis() -> None:
    panels = axes_by_title(robustness_figure(classification_cells(), "robust_accuracy"))

    ax = panels["pgd"]
    for line in ax.get_lines():
        assert list(line.get_xdata()) == [0, 2, 8]
    assert ax.get_xlabel() == "ε (/255)"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "2", "8"]
    assert ax.get_ylabel() == "robust_accuracy"
    assert ax.get_ylim() == (0.0, 1.0)


def test_other_budgets_keep_their_raw_values_and_sigma_uses_255ths() -> None:
    cells = [
        cell("none", "square", q, {"clean_accuracy": 0.9, "robust_accuracy": r}, budget_name="q_max")
        for q, r in ((100.0, 0.6), (1000.0, 0.3))
    ]
    cells.append(
        cell(
            "none", "gaussian", 16 / 255, {"clean_accuracy": 0.9, "robust_accuracy": 0.8}, budget_name="sigma"
        )
    )
    panels = axes_by_title(robustness_figure(cells, "robust_accuracy"))

    assert list(panels["square"].get_lines()[0].get_xdata()) == [0, 100, 1000]
    assert panels["square"].get_xlabel() == "q_max"
    assert list(panels["gaussian"].get_lines()[0].get_xdata()) == [0, 16]
    assert panels["gaussian"].get_xlabel() == "σ (/255)"


def test_segmentation_curves_label_hd95_as_lower_is_better() -> None:
    cells = [*classification_cells(), *segmentation_cells()]

    dice = axes_by_title(robustness_figure(cells, "robust_dice"))
    assert list(dice) == ["pgd"]
    assert [line.get_label() for line in dice["pgd"].get_lines()] == ["none", "at-pgd"]
    assert dice["pgd"].get_ylim() == (0.0, 1.0)

    hd95 = axes_by_title(robustness_figure(cells, "robust_hd95"))["pgd"]
    assert hd95.get_ylabel() == "robust_hd95 (lower is better)"
    assert list(hd95.get_lines()[0].get_ydata()) == [4.0, 12.5, 31.0]
    assert hd95.get_ylim()[1] > 1.0


def test_lines_are_labelled_by_row_when_models_differ() -> None:
    cells = [
        *classification_cells(),
        cell("none", "pgd", 8 / 255, {"clean_accuracy": 0.9, "robust_accuracy": 0.05}, model="vit-b16"),
    ]
    pgd = axes_by_title(robustness_figure(cells, "robust_accuracy"))["pgd"]

    assert [line.get_label() for line in pgd.get_lines()] == [
        "resnet18/none",
        "resnet18/at-pgd",
        "vit-b16/none",
    ]


def test_a_large_board_keeps_rows_apart_and_its_legend_inside_the_figure() -> None:
    """20 rows with long labels (the colorization suite): colours by defense, line style and
    marker by model, and a legend that is not cut off at the figure's edges."""
    defenses = ["none", *(f"colorize-{m}[stage={s}]" for m in ("deconv", "pixelshuffle", "coloru")
                          for s in ("color-module", "all", "last-layer"))]  # fmt: skip
    cells = [
        cell(defense, attack, eps, {"clean_accuracy": 0.9, "robust_accuracy": 0.5}, model=model)
        for model in ("resnet18", "densenet121")
        for defense in defenses
        for attack in ("fgsm", "pgd")
        for eps in (1 / 255, 4 / 255)
    ]
    fig = robustness_figure(cells, "robust_accuracy")
    lines = axes_by_title(fig)["pgd"].get_lines()
    assert len(lines) == 20
    styles = {(line.get_color(), line.get_linestyle(), line.get_marker()) for line in lines}
    assert len(styles) == 20, "every row is drawn differently"
    by_label = {line.get_label(): line for line in lines}
    assert by_label["resnet18/none"].get_color() == by_label["densenet121/none"].get_color()
    assert by_label["resnet18/none"].get_linestyle() != by_label["densenet121/none"].get_linestyle()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    fig.canvas.draw()
    legend, figure_box = fig.legends[0].get_window_extent(renderer), fig.bbox
    assert len(fig.legends[0].get_texts()) == 20
    assert figure_box.x0 <= legend.x0 and legend.x1 <= figure_box.x1
    assert figure_box.y0 <= legend.y0 and legend.y1 <= figure_box.y1


def test_plot_writes_png_and_svg(tmp_path: Path) -> None:
    paths = plot_robustness_curves(classification_cells(), "robust_accuracy", tmp_path / "out" / "curves.png")

    assert paths == [tmp_path / "out" / "curves.png", tmp_path / "out" / "curves.svg"]
    assert paths[0].read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "<svg" in paths[1].read_text(encoding="utf-8")


def test_plot_rejects_an_absent_metric(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="robust_dice"):
        plot_robustness_curves(classification_cells(), "robust_dice", tmp_path / "curves.png")
    assert not list(tmp_path.iterdir())


def test_rendered_png_is_a_real_image(tmp_path: Path) -> None:
    from PIL import Image

    png, _ = plot_robustness_curves(
        classification_cells(), "robust_accuracy", tmp_path / "curves.png", title="resnet18 on pneumonia"
    )
    with Image.open(png) as image:
        image.load()
        width, height = image.size
        assert image.format == "PNG"
        assert len(image.getcolors(maxcolors=1 << 20) or []) > 2
    # 3 panels in one row of 4.2 in at dpi 120
    assert width >= 600
    assert width > height > 200
