"""Rendering leaderboard entries: a rich table, markdown, CSV, JSON and one self-contained HTML page.

Rows are model + defense, ranked by the worst-case robust primary metric. Columns: the clean
primary (and secondary) metric, the robust primary metric of every attack at its headline
budget, the worst case over attacks (and the secondary metric's worst case), the area under
the robustness curve, the runtime, and the sanity flags.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from medbench.config.budgets import format_budget
from medbench.leaderboard.configuration import Excluded
from medbench.leaderboard.entries import LeaderboardEntry
from medbench.measuring.sanity import AT_CHANCE, NEEDS_ADAPTIVE, mark_of

FORMATS = ("table", "markdown", "html", "csv", "json")


SECONDARY = {"accuracy": ("auc", True), "auc": ("accuracy", True), "dice": ("hd95", False)}
"""Per primary metric, the secondary metric shown beside it and whether higher is better."""


@dataclass(frozen=True)
class Estimate:
    """A number of the board with its 95% interval (``entry.intervals``)."""

    value: float
    low: float
    high: float

    def __str__(self) -> str:
        # round the point estimate to what the interval supports: 2 decimals once it is wider than 0.02
        digits = 2 if self.high - self.low > 0.02 else 3
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


Cell = str | float | Estimate | None


def _estimate(entry: LeaderboardEntry, key: str, value: float | None) -> float | Estimate | None:
    """``value`` with the entry's interval under ``key``, when it has one."""
    interval = entry.intervals.get(key)
    if value is None or interval is None:
        return value
    return Estimate(value, interval[0], interval[1])


@dataclass(frozen=True)
class Column:
    """One column of the board: its header and how to read its value from an entry."""

    header: str
    key: str


def _attack_columns(entries: Sequence[LeaderboardEntry]) -> list[tuple[str, float]]:
    """(attack, headline budget) of every attack on the board, in first-seen order."""
    seen: dict[str, float] = {}
    for entry in entries:
        for attack, budget in entry.headline_budgets.items():
            seen.setdefault(attack, budget)
    return list(seen.items())


def _budget_text(entry: LeaderboardEntry, attack: str, budget: float) -> str:
    native = next(
        (r.budget_native for r in entry.results if r.attack == attack.split(" ")[0] and r.budget == budget),
        None,
    )
    return native or format_budget(budget)


def _secondary_worst(entry: LeaderboardEntry) -> float | None:
    name, higher = SECONDARY[entry.metric]
    values = [
        v
        for r in entry.results
        if r.threat_model != "l2-minimal"
        and entry.headline_budgets.get(r.attack if r.threat == "direct" else f"{r.attack} (transfer)")
        == r.budget
        and (v := r.metrics.get(f"robust_{name}")) is not None
    ]
    if not values:
        return None
    return min(values) if higher else max(values)


def board_rows(entries: Sequence[LeaderboardEntry]) -> tuple[list[str], list[list[Cell]]]:
    """The header and the cells of the board (numbers stay numbers, with their intervals as
    :class:`Estimate`; None where undefined)."""
    if not entries:
        return [], []
    metric = entries[0].metric
    secondary, _ = SECONDARY[metric]
    attacks = _attack_columns(entries)
    header = ["rank", "model", "defense", f"clean {metric}", f"clean {secondary}"]
    header += [f"{attack} @{_budget_text(entries[0], attack, budget)}" for attack, budget in attacks]
    header += [f"worst-case {metric}", "worst attack", f"worst-case {secondary}", "curve area", "runtime (s)"]
    header += ["flags"]
    rows: list[list[Cell]] = []
    for entry in entries:
        row: list[Cell] = [
            entry.rank_group or entry.rank,
            entry.model,
            entry.defense,
            _estimate(entry, f"clean_{metric}", entry.clean.get(f"clean_{metric}")),
            entry.clean.get(f"clean_{secondary}"),
        ]
        row += [_estimate(entry, attack, entry.robust_at_headline.get(attack)) for attack, _ in attacks]
        row += [
            _estimate(entry, "worst_case", entry.worst_case.value),
            entry.worst_case.attack or "",
            _secondary_worst(entry),
            entry.curve_area,
            round(entry.runtime_seconds, 2),
            flags_text(entry),
        ]
        rows.append(row)
    return header, rows


def flags_text(entry: LeaderboardEntry) -> str:
    """The flags column: ``at chance: clean-at-chance; needs adaptive evaluation: zero-gradients``."""
    checks: dict[str, set[str]] = {AT_CHANCE: set(), NEEDS_ADAPTIVE: set()}
    for flag in entry.sanity:
        checks[mark_of(flag.check)].add(flag.check)
    return "; ".join(f"{mark}: " + ", ".join(sorted(names)) for mark, names in checks.items() if names)


def _text(value: Cell, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, Estimate):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def rich_table(entries: Sequence[LeaderboardEntry], title: str) -> Table:
    """The board as a rich table for the terminal."""
    header, rows = board_rows(entries)
    table = Table(title=title)
    for name in header:
        table.add_column(
            name,
            justify="left" if name in ("model", "defense", "worst attack", "flags") else "right",
            overflow="fold",  # a narrow terminal folds a name or a number, never cuts it
        )
    for row in rows:
        cells = [escape(_text(v)) for v in row]
        if row[-1]:
            cells[-1] = f"[yellow]{cells[-1]}[/]"
        table.add_row(*cells)
    return table


def excluded_lines(excluded: Sequence[Excluded]) -> list[str]:
    """``label: reason`` of every cell left off the board for its settings."""
    return [f"{e.label}: {e.reason}" for e in excluded]


def full_width(table: Table) -> int:
    """The columns ``table`` needs to show every cell on one line (for output that is not a terminal)."""
    return Console(width=10_000, file=io.StringIO()).measure(table).maximum


def markdown(entries: Sequence[LeaderboardEntry], title: str, excluded: Sequence[Excluded] = ()) -> str:
    """The board as a GitHub-flavoured markdown table, with the flags and excluded cells below it."""
    header, rows = board_rows(entries)
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |"]
    lines.append(
        "|"
        + "|".join("---" if h in ("model", "defense", "worst attack", "flags") else "---:" for h in header)
        + "|"
    )
    lines += ["| " + " | ".join(_text(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    flags = [(e, f) for e in entries for f in e.sanity]
    if flags:
        lines += ["", f"Sanity flags (rows marked *{NEEDS_ADAPTIVE}*, or *{AT_CHANCE}*):", ""]
        lines += [
            f"- **{e.model}/{e.defense}** `{f.check}`: {f.message} ({'; '.join(f.cells)})" for e, f in flags
        ]
    if excluded:
        lines += ["", f"Left out ({len(excluded)} cells of other settings than this board's):", ""]
        lines += [f"- {line}" for line in excluded_lines(excluded)]
    return "\n".join(lines) + "\n"


def csv_text(entries: Sequence[LeaderboardEntry]) -> str:
    """The board as CSV (numbers unformatted; empty where undefined)."""
    header, rows = board_rows(entries)
    with_interval = [any(isinstance(row[i], Estimate) for row in rows) for i in range(len(header))]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    names: list[str] = []
    for name, interval in zip(header, with_interval, strict=True):
        names += [name, f"{name} low", f"{name} high"] if interval else [name]
    writer.writerow(names)
    for row in rows:
        values: list[object] = []
        for value, interval in zip(row, with_interval, strict=True):
            if isinstance(value, Estimate):
                values += [value.value, value.low, value.high]
            else:
                values += ["" if value is None else value] + (["", ""] if interval else [])
        writer.writerow(values)
    return buffer.getvalue()


def json_text(entries: Sequence[LeaderboardEntry]) -> str:
    """The entries as a JSON list (the schema of ``leaderboards/schema/entry.schema.json``)."""
    return json.dumps([e.model_dump(mode="json") for e in entries], indent=2) + "\n"


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem;color:#1d2430;max-width:1500px}
h1{font-size:1.5rem;margin-bottom:.2rem}.meta{color:#5b6575;margin-bottom:1.2rem}
table{border-collapse:collapse;font-size:.9rem;margin:1rem 0}
th,td{padding:.35rem .6rem;border-bottom:1px solid #e3e6ea;text-align:right;white-space:nowrap}
th{background:#f4f6f8;cursor:pointer;user-select:none;position:sticky;top:0;white-space:normal;
vertical-align:bottom}.scroll{overflow-x:auto}
th.text,td.text{text-align:left}th[aria-sort=ascending]::after{content:" ▲"}
th[aria-sort=descending]::after{content:" ▼"}tr:hover td{background:#f9fafb}
td.flag{color:#a15c00;white-space:normal;text-align:left}
.flags li{margin:.25rem 0}code{background:#f4f6f8;padding:0 .25rem;border-radius:3px}
details{margin:.4rem 0}summary{cursor:pointer;font-weight:600}
figure{display:inline-block;margin:.5rem;vertical-align:top}figcaption{font-size:.8rem;color:#5b6575}
img.grid{max-width:460px;border:1px solid #e3e6ea}img.curves{max-width:100%}
"""

_SCRIPT = """
document.querySelectorAll("table.board th").forEach((th, column) => th.addEventListener("click", () => {
  const table = th.closest("table"), body = table.tBodies[0];
  const ascending = th.getAttribute("aria-sort") !== "ascending";
  table.querySelectorAll("th").forEach(h => h.removeAttribute("aria-sort"));
  th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  const key = row => { const cell = row.cells[column]; const v = cell.dataset.value;
    return v === undefined || v === "" ? cell.textContent : parseFloat(v); };
  const rows = Array.from(body.rows).sort((a, b) => {
    const x = key(a), y = key(b);
    const numbers = typeof x === "number" && typeof y === "number";
    const order = numbers ? x - y : String(x).localeCompare(String(y));
    return ascending ? order : -order; });
  rows.forEach(row => body.appendChild(row));
}));
"""


def _meta(first: LeaderboardEntry) -> str:
    """The page's line under the title: data, samples, seed, device, versions, date and commit."""
    esc = html.escape
    versions = ", ".join(f"{k} {v}" for k, v in first.versions.items())
    fingerprint = esc(first.dataset_fingerprint)
    meta = (
        f"dataset <code>{esc(first.dataset)}</code> (fingerprint <code>{fingerprint}</code>), "
        f"{first.n_eval} test samples, seed {first.seed}, on {esc(first.accelerator or 'unknown')}; "
        f"ranked by worst-case robust {esc(first.metric)} at each attack's largest budget; "
        f"{esc(versions)}"
    )
    if first.environment or first.date:
        libraries = ", ".join(f"{k} {v}" for k, v in first.environment.items() if k != "commit")
        commit = first.environment.get("commit", "unknown")
        meta += f"<br>run {esc(first.date or 'on an unknown date')}, commit <code>{esc(commit)}</code>"
        meta += f"; {esc(libraries)}" if libraries else ""
    return meta


def html_page(
    entries: Sequence[LeaderboardEntry],
    title: str,
    curves_png: Path | None = None,
    examples: dict[str, list[tuple[str, Path]]] | None = None,
    excluded: Sequence[Excluded] = (),
) -> str:
    """One self-contained HTML page: the sortable board, the flags, the curves and the example grids.

    Args:
        entries: The ranked entries.
        title: The page's heading.
        curves_png: The robustness curves, embedded as an image.
        examples: Per row (``model/defense``), (cell label, ``examples.png``) pairs to embed.
    """
    header, rows = board_rows(entries)
    esc = html.escape
    text_columns = {"model", "defense", "worst attack", "flags"}
    head = "".join(f'<th class="{"text" if h in text_columns else ""}">{esc(h)}</th>' for h in header)
    body = []
    for row in rows:
        cells = []
        for name, value in zip(header, row, strict=True):
            plain = value.value if isinstance(value, Estimate) else value
            number = isinstance(plain, (int, float)) and not (isinstance(plain, float) and math.isnan(plain))
            data = f' data-value="{plain}"' if number else ""
            css = "flag" if name == "flags" else ("text" if name in text_columns else "")
            cells.append(f'<td class="{css}"{data}>{esc(_text(value))}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    meta = _meta(entries[0]) if entries else ""
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>{esc(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{esc(title)}</h1><div class=meta>{meta}</div>",
        f"<table class=board><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>",
    ]
    flagged = [(e, f) for e in entries for f in e.sanity]
    if flagged:
        parts.append(
            f"<h2>Sanity flags</h2><p>Rows with a flag {NEEDS_ADAPTIVE}: their robust numbers are "
            "upper bounds that a stronger or adapted attack may lower. Rows "
            f"{AT_CHANCE} have not learned the task (their clean metric is at chance), so their "
            "robust numbers measure nothing; they rank last.</p><ul class=flags>"
        )
        parts += [
            f"<li><b>{esc(e.model)}/{esc(e.defense)}</b> <code>{esc(f.check)}</code>: {esc(f.message)} "
            f"<small>({esc('; '.join(f.cells))})</small></li>"
            for e, f in flagged
        ]
        parts.append("</ul>")
    if excluded:
        parts.append(
            f"<h2>Left out</h2><p>{len(excluded)} cells of other settings than this board's:</p><ul>"
        )
        parts += [f"<li>{esc(line)}</li>" for line in excluded_lines(excluded)]
        parts.append("</ul>")
    if curves_png is not None and curves_png.is_file():
        parts.append(
            "<h2>Robustness curves</h2>"
            f'<img class=curves alt="robustness curves" src="{_data_uri(curves_png)}">'
        )
    if examples:
        parts.append(
            "<h2>Examples</h2><p>Clean, adversarial and amplified perturbation of the first test "
            "samples of every cell (segmentation: also the masks).</p>"
        )
        for row_name, grids in examples.items():
            figures = "".join(
                f'<figure><img class=grid loading=lazy alt="{esc(label)}" src="{_data_uri(path)}">'
                f"<figcaption>{esc(label)}</figcaption></figure>"
                for label, path in grids
                if path.is_file()
            )
            parts.append(f"<details><summary>{esc(row_name)}</summary>{figures}</details>")
    parts.append(f"<script>{_SCRIPT}</script></body></html>")
    return "\n".join(parts) + "\n"
