"""Write the JSON schema of a leaderboard entry: ``python -m medbench.leaderboard.schema [PATH]``.

The checked-in copy is ``leaderboards/schema/entry.schema.json``; a test fails when it differs
from what this module generates, so regenerate it after changing
:class:`~medbench.leaderboard.entries.LeaderboardEntry`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from medbench.leaderboard.entries import entry_schema

DEFAULT_PATH = Path("leaderboards/schema/entry.schema.json")


def schema_text() -> str:
    """The schema as the checked-in file holds it (sorted keys, 2-space indent, final newline)."""
    return json.dumps(entry_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else DEFAULT_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(schema_text(), encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
