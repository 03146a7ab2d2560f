"""`medbench leaderboard`: a suite's ranked board from MLflow."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console

from medbench.cli.app import cli
from medbench.leaderboard.render import FORMATS, excluded_lines, full_width


@cli.command()
@click.option(
    "--suite",
    default="smoke",
    show_default=True,
    help="Suite whose runs to rank: a name, or the path of a suite YAML.",
)
@click.option("--experiment", default=None, help="MLflow experiment (default: the suite's name).")
@click.option("--tracking-uri", default=None, help="MLflow tracking URI (default: as `medbench run`).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="table (terminal), markdown, html (one self-contained page), csv or json (schema entries).",
)
@click.option(
    "--output", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write to a file."
)
@click.option(
    "--metric",
    default=None,
    help="Rank by this robust metric: accuracy, auc or dice (default: the suite's rank_by, else "
    "accuracy; mean AUC for multi-label data; Dice for segmentation).",
)
def leaderboard(
    suite: str,
    experiment: str | None,
    tracking_uri: str | None,
    fmt: str,
    output: Path | None,
    metric: str | None,
) -> None:
    """Rank a suite's runs from MLflow: clean, robust per attack, worst case, curve area, runtime, flags."""
    from medbench.config.spec import available_suites, load_suite
    from medbench.leaderboard.board import load_board, render_board
    from medbench.recording.tracking import resolve_tracking_uri

    if Path(suite).suffix in {".yaml", ".yml"} or suite in available_suites():
        spec = load_suite(suite)  # a name or a path, as `medbench run --suite` takes
        suite, metric = spec.name, metric or spec.rank_by
    uri = resolve_tracking_uri(tracking_uri)
    board = load_board(uri, experiment or suite, suite, metric)
    stderr = Console(stderr=True)
    if board.unfinished:
        stderr.print(f"{board.unfinished} cell run(s) that did not finish are left out", markup=False)
    if board.excluded:
        shown = excluded_lines(board.excluded)
        more = f"; {len(shown) - 5} more" if len(shown) > 5 else ""
        stderr.print(
            f"{len(shown)} cell(s) of other settings than the newest run's are left out: "
            + "; ".join(shown[:5])
            + more,
            markup=False,
        )
    if fmt == "table" and output is None:
        from medbench.leaderboard.render import rich_table

        table = rich_table(board.entries, board.title)
        Console(width=None if sys.stdout.isatty() else full_width(table)).print(table)
        return
    text = render_board(board, fmt)
    if output is None:
        click.echo(text, nl=False)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    stderr.print(f"wrote {output} ({len(board.entries)} rows, {fmt})", markup=False)
