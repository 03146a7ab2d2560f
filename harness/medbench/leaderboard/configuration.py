"""A board is one configuration: cells of other settings are listed as excluded, never averaged in.

Every cell logs the settings that define its result as MLflow params (sample count, seed,
training, dataset, model, defense and attack settings, weights, checkpoint, EOT draws,
precision) and the dataset fingerprint as a tag. :func:`one_configuration` takes the
**newest** finished cell as the reference: a cell stays on the board only if its run-wide
settings equal the reference's, its attack's settings equal those of the newest cell of the
same attack, and its model's and defense's settings equal those of the newest cell of the
same row. The others are returned with the reason, which every board format shows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from medbench.leaderboard.records import CellRecord

RUN_WIDE = ("n_eval", "seed", "eot_samples", "weights", "checkpoint", "normalization", "precision", "dataset")
"""Params every cell of a board shares, besides ``training.*`` and ``dataset.*`` settings."""
RUN_WIDE_PREFIXES = ("training.", "dataset.")
ROW_PREFIXES = ("model.", "defense.", "model_identity.")
ATTACK_PREFIXES = ("attack.",)


@dataclass(frozen=True)
class Excluded:
    """A cell left off the board, and why."""

    label: str
    run_id: str
    reason: str


def _part(cell: CellRecord, names: Iterable[str] = (), prefixes: Sequence[str] = ()) -> dict[str, str]:
    chosen = {k: v for k, v in cell.params.items() if k in names or k.startswith(tuple(prefixes))}
    if "dataset" in names:
        chosen["dataset fingerprint"] = cell.dataset_fingerprint
    return chosen


def _difference(part: dict[str, str], reference: dict[str, str]) -> str | None:
    """``n_eval 64, not 450``: the first setting that differs, or None."""
    for key in sorted(set(part) | set(reference)):
        if part.get(key) != reference.get(key):
            return f"{key} {part.get(key, 'unset')}, not {reference.get(key, 'unset')}"
    return None


def one_configuration(cells: Sequence[CellRecord]) -> tuple[list[CellRecord], list[Excluded]]:
    """The finished cells that share the newest cell's configuration, and the excluded ones.

    Args:
        cells: Finished cells of one experiment (any order).

    Returns:
        ``(kept, excluded)``, both in the order of ``cells``.
    """
    finished = [c for c in cells if c.status == "FINISHED"]
    if not finished:
        return [], []
    newest = max(finished, key=lambda c: c.start_time)
    reference = _part(newest, RUN_WIDE, RUN_WIDE_PREFIXES)
    newest_of_attack: dict[str, CellRecord] = {}
    newest_of_row: dict[str, CellRecord] = {}
    for cell in sorted(finished, key=lambda c: c.start_time):
        newest_of_attack[cell.attack] = cell
        newest_of_row[cell.row] = cell
    kept: list[CellRecord] = []
    excluded: list[Excluded] = []
    for cell in finished:
        checks = (
            (_part(cell, RUN_WIDE, RUN_WIDE_PREFIXES), reference),
            (_part(cell, (), ATTACK_PREFIXES), _part(newest_of_attack[cell.attack], (), ATTACK_PREFIXES)),
            (_part(cell, (), ROW_PREFIXES), _part(newest_of_row[cell.row], (), ROW_PREFIXES)),
        )
        reason = next((d for part, ref in checks if (d := _difference(part, ref)) is not None), None)
        if reason is None:
            kept.append(cell)
        else:
            excluded.append(Excluded(cell.label, cell.run_id, reason))
    return kept, excluded
