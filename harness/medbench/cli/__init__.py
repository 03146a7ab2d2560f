"""The ``medbench`` command line (DESIGN.md §4): one module per command, over the Python API's engine.

Exit codes: 0 every cell finished; 1 some cells failed (the others ran and were logged);
2 bad usage or input (one line on stderr, nothing recorded as a success).
"""

from __future__ import annotations

import os
import sys

import click

from medbench.cli import board, listing, run, ui  # noqa: F401  (each registers its command)
from medbench.cli.app import DEBUG_ENV, EXIT_CELLS_FAILED, EXIT_OK, EXIT_USAGE, cli, state
from medbench.errors import MedbenchError, UsageError, first_line
from medbench.plugins.host import load_plugins

__all__ = ["cli", "main"]


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: turns usage errors into one line on stderr and exit code 2."""
    try:
        host = load_plugins(check=False)
        state.host = host
        arguments = list(sys.argv[1:] if argv is None else argv)
        state.argv = arguments[arguments.index("run") + 1 :] if "run" in arguments else arguments
        host.add_commands(cli)
        code = cli.main(args=argv, prog_name="medbench", standalone_mode=False)
    except click.exceptions.Exit as done:
        raise SystemExit(done.exit_code) from None
    except click.ClickException as error:
        error.show()
        raise SystemExit(error.exit_code) from None
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        raise SystemExit(130) from None
    except MedbenchError as error:
        # one line, whatever a file is called
        message = str(error).replace("\r", "\\r").replace("\n", "\\n")
        click.echo(f"medbench: error: {message}", err=True)
        raise SystemExit(EXIT_USAGE if isinstance(error, UsageError) else EXIT_CELLS_FAILED) from None
    except Exception as error:  # a bug or an environment failure: one line, the traceback on request
        if os.environ.get(DEBUG_ENV, "").strip() not in ("", "0"):
            raise
        click.echo(
            f"medbench: internal error: {first_line(error)} (set {DEBUG_ENV}=1 for the traceback)", err=True
        )
        raise SystemExit(EXIT_CELLS_FAILED) from None
    raise SystemExit(code if isinstance(code, int) else EXIT_OK)
