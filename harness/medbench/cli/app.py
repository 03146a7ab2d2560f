"""The ``medbench`` command line (DESIGN.md §4).

Exit codes: 0 every cell finished; 1 some cells failed (the others ran and were logged);
2 bad usage or input (one line on stderr, nothing recorded as a success).
"""

from __future__ import annotations

import click

from medbench import __version__
from medbench.plugins.host import PluginHost, load_plugins

EXIT_OK, EXIT_CELLS_FAILED, EXIT_USAGE = 0, 1, 2
DEBUG_ENV = "MEDBENCH_DEBUG"
"""Set to 1 to see the traceback of an internal error instead of its one-line summary."""
LIST_KINDS = ("attacks", "defenses", "datasets", "models", "metrics", "suites")
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


class _State:
    host: PluginHost | None = None
    argv: list[str] = []
    """The arguments after ``medbench`` (the devices executor hands them to its workers)."""


state = _State()


def plugin_host(strict: bool = False) -> PluginHost:
    if state.host is None:
        state.host = load_plugins(strict=strict, check=False)
    state.host.strict = state.host.strict or strict
    state.host.check()
    return state.host


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="medbench")
@click.option("--strict-plugins", is_flag=True, help="Fail when any plugin fails to load.")
@click.pass_context
def cli(ctx: click.Context, strict_plugins: bool) -> None:
    """Adversarial robustness benchmarks for medical-imaging models.

    Runs a matrix of models x defenses x attacks x budgets (ε) on one dataset, logs every
    cell to MLflow, and prints clean vs. robust metrics. `medbench run` with no options
    runs the `smoke` suite on the built-in synthetic dataset.
    """
    ctx.ensure_object(dict)
    ctx.obj["strict_plugins"] = strict_plugins
