"""Robustness curves: a robust metric against the attack budget, one panel per attack.

The points come from a suite's cell records alone (see :mod:`medbench.leaderboard.records`):
each row (``model/defense``) gets one line per panel, starting at budget 0 with its clean
metric and followed by the robust metric at every budget the row was attacked with.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from medbench.leaderboard.records import CellRecord

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

Points = dict[str, dict[str, list[tuple[float, float]]]]
"""panel -> row -> sorted ``(budget, value)`` points."""

_PER_255 = {"eps": "ε", "sigma": "σ"}
"""Budget names drawn in /255 units, with their axis symbols."""
_BOUNDED = ("accuracy", "auc", "dice")
"""Metrics in [0, 1]: their axes get fixed limits."""


def panel_name(cell: CellRecord) -> str:
    """The panel a cell is drawn in: its attack, or ``"<attack> (transfer)"`` for transfer cells."""
    return f"{cell.attack} (transfer)" if cell.threat == "transfer" else cell.attack


def clean_metric(metric: str) -> str | None:
    """The clean counterpart of a robust metric (``robust_dice`` -> ``clean_dice``); None if there is none."""
    return "clean_" + metric.removeprefix("robust_") if metric.startswith("robust_") else None


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def curve_points(cells: Sequence[CellRecord], metric: str) -> Points:
    """The points of every line: panel -> row -> ``(budget, value)`` points sorted by budget.

    Panels (one per attack; transfer cells go to their own panel ``"<attack> (transfer)"``) and
    rows keep the order in which they first appear in ``cells``. The point at budget 0 is the
    mean clean metric of the row's cells in that panel (``metric`` with its ``robust_`` prefix
    replaced by ``clean_``), unless one of those cells was itself run at budget 0. Cells at the
    same budget (e.g. transfer from several surrogates) are averaged. NaN (or infinite) values
    give no point, and a row without any robust point in a panel is left out of it.

    Args:
        cells: The cell records of a suite (e.g. from ``latest_cells``).
        metric: The robust metric, e.g. ``"robust_accuracy"``.

    Returns:
        panel -> row -> sorted ``(budget, value)`` points; empty when no cell has the metric.
    """
    clean = clean_metric(metric)
    # panel -> row -> budget (rounded, so that 8/255 read back from MLflow matches) -> (budget, values)
    robust: dict[str, dict[str, dict[float, tuple[float, list[float]]]]] = {}
    cleans: dict[tuple[str, str], list[float]] = {}
    for cell in cells:
        panel = panel_name(cell)
        value = cell.metric(metric)
        if math.isfinite(value):
            by_budget = robust.setdefault(panel, {}).setdefault(cell.row, {})
            by_budget.setdefault(round(cell.budget, 12), (cell.budget, []))[1].append(value)
        clean_value = cell.metric(clean) if clean else math.nan
        if math.isfinite(clean_value):
            cleans.setdefault((panel, cell.row), []).append(clean_value)

    rows = list(dict.fromkeys(cell.row for cell in cells))
    points: Points = {}
    for panel, by_row in robust.items():
        points[panel] = {}
        for row in (r for r in rows if r in by_row):
            line = {budget: _mean(values) for budget, values in by_row[row].values()}
            if 0.0 not in by_row[row] and (panel, row) in cleans:
                line[0.0] = _mean(cleans[(panel, row)])
            points[panel][row] = sorted(line.items())
    return points


def _budget_axis(budget_name: str) -> tuple[float, str]:
    """The x scale and axis label of a budget: eps/sigma in /255 units, others as they are."""
    symbol = _PER_255.get(budget_name)
    return (255.0, f"{symbol} (/255)") if symbol else (1.0, budget_name)


def _y_label(metric: str) -> str:
    return f"{metric} (lower is better)" if "hd95" in metric else metric


_MODEL_STYLES = (("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"))
"""Line style and marker of the first, second... model of a board."""


class _Style(NamedTuple):
    color: str
    linestyle: str
    marker: str


def _line_styles(rows: Sequence[str]) -> dict[str, _Style]:
    """Colour by defense, line style and marker by model, so that a row is told apart from
    every other even on boards with more rows than a palette has colours."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    def split(row: str) -> tuple[str, str]:
        model, _, defense = row.partition("/")
        return model, defense or model

    models = list(dict.fromkeys(split(row)[0] for row in rows))
    defenses = list(dict.fromkeys(split(row)[1] for row in rows))
    palette = colormaps["tab10" if len(defenses) <= 10 else "tab20"]
    styles = {}
    for row in rows:
        model, defense = split(row)
        linestyle, marker = _MODEL_STYLES[models.index(model) % len(_MODEL_STYLES)]
        color = to_hex(palette(defenses.index(defense) % palette.N))
        styles[row] = _Style(color, linestyle, marker)
    return styles


def robustness_figure(cells: Sequence[CellRecord], metric: str, title: str = "") -> Figure:
    """The robustness-curve figure (see :func:`plot_robustness_curves`), not yet written anywhere.

    Each panel's axes hold exactly one line (a ``Line2D``) per row drawn in it.

    Raises:
        ValueError: When no cell has ``metric``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = curve_points(cells, metric)
    if not points:
        raise ValueError(f"no cell has the metric {metric!r}")
    budget_names = {panel_name(c): c.budget_name for c in reversed(cells)}  # first cell of a panel wins
    rows = list(dict.fromkeys(row for by_row in points.values() for row in by_row))
    one_model = len({row.split("/", 1)[0] for row in rows}) == 1
    labels = {row: row.split("/", 1)[1] if one_model and "/" in row else row for row in rows}
    styles = _line_styles(rows)

    ncols = min(3, len(points))
    nrows = math.ceil(len(points) / ncols)
    width = max(6.4, 4.2 * ncols)
    # a legend column as wide as the longest label (10 pt text, about 0.6 em a character,
    # plus the line sample), as many columns as fit the figure: long labels are never cut off
    column_inches = (max(len(label) for label in labels.values()) * 6.0 + 40.0) / 72.0
    legend_cols = max(1, min(len(rows), 4, int(width // column_inches)))
    legend_rows = math.ceil(len(rows) / legend_cols)
    fig = Figure(figsize=(width, 3.2 * nrows + 0.8 + 0.25 * legend_rows), layout="constrained")
    FigureCanvasAgg(fig)
    handles: dict[str, Line2D] = {}
    for i, (panel, by_row) in enumerate(points.items()):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        scale, x_label = _budget_axis(budget_names[panel])
        xs_all: set[float] = set()
        for row, line in by_row.items():
            xs = [round(budget * scale, 6) for budget, _ in line]
            xs_all.update(xs)
            ys = [v for _, v in line]
            style = styles[row]
            (handles[row],) = ax.plot(
                xs,
                ys,
                color=style.color,
                linestyle=style.linestyle,
                marker=style.marker,
                label=labels[row],
                clip_on=False,
            )
        if scale != 1.0:
            ax.set_xticks(sorted(xs_all), [f"{x:g}" for x in sorted(xs_all)])
        if any(word in metric for word in _BOUNDED):
            ax.set_ylim(0.0, 1.0)
        ax.set_title(panel)
        ax.set_xlabel(x_label)
        ax.set_ylabel(_y_label(metric))
        ax.grid(True, alpha=0.3)
    fig.legend(
        [handles[row] for row in rows],
        [labels[row] for row in rows],
        loc="outside lower center",
        ncols=legend_cols,
        frameon=False,
    )
    if title:
        fig.suptitle(title)
    return fig


def plot_robustness_curves(
    cells: Sequence[CellRecord], metric: str, path: Path, title: str = ""
) -> list[Path]:
    """Draw a robust metric against the attack budget, one panel per attack, one line per row.

    Panels sit in a grid of at most 3 columns (transfer cells get their own ``"<attack> (transfer)"``
    panel), each with a line per ``model/defense`` row (labelled by defense alone when every row
    shares one model; coloured by defense, styled and marked by model) and one legend shared
    below them, in as many columns as its labels fit. eps and sigma budgets are drawn in /255
    units, other budgets (``q_max``, ...) as they are; accuracy, AUC and Dice axes run from 0 to 1.

    Args:
        cells: The cell records of a suite.
        metric: The robust metric, e.g. ``"robust_accuracy"`` or ``"robust_hd95"``.
        path: The PNG to write (dpi 120); an SVG is written next to it with the suffix ``.svg``.
        title: A title above the panels.

    Returns:
        The PNG and SVG paths.

    Raises:
        ValueError: When no cell has ``metric``, or ``path`` ends in ``.svg``.
    """
    path = Path(path)
    svg = path.with_suffix(".svg")
    if svg == path:
        raise ValueError(f"{path} is the SVG's own name: give the PNG's path")
    fig = robustness_figure(cells, metric, title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=120)
    fig.savefig(svg, format="svg", metadata={"Date": None})
    return [path, svg]
