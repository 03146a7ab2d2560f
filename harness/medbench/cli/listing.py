"""`medbench list` and `medbench plugins`: what is installed."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from medbench.cli.app import EXIT_USAGE, LIST_KINDS, cli, plugin_host, state
from medbench.config.budgets import format_budgets
from medbench.plugins.host import PluginHost, load_plugins


def _list_table(kind: str, host: PluginHost) -> Table:
    from medbench.config.spec import available_suites, load_suite

    table = Table(title=kind)
    table.add_column("name", style="bold")
    table.add_column("description")
    if kind == "suites":
        for name in available_suites():
            spec = load_suite(name)
            table.add_row(name, spec.description)
        return table
    registry = host.registries.all()[kind]
    if kind == "attacks":
        table.add_column("threat")
        table.add_column("budget")
        table.add_column("tasks")
    elif kind == "defenses":
        table.add_column("kind")
        table.add_column("tasks")
    elif kind == "datasets":
        table.add_column("tasks")
        table.add_column("layout of --data-dir", overflow="fold")
    elif kind == "models":
        table.add_column("tasks")
    table.add_column("plugin")
    for item in registry:
        row = [item.name, item.description]
        if kind == "attacks":
            row += [
                item.threat_model,  # type: ignore[attr-defined]
                f"{item.budget_name}: {format_budgets(item.default_budgets)}",  # type: ignore[attr-defined]
                ",".join(sorted(item.tasks)),  # type: ignore[attr-defined]
            ]
        elif kind == "defenses":
            row += [item.kind, ",".join(sorted(item.tasks))]  # type: ignore[attr-defined]
        elif kind == "datasets":
            layout = item.layout or ("generated, no files" if not item.needs_data_dir else "")  # type: ignore[attr-defined]
            row += [item.task, layout]  # type: ignore[attr-defined]
        elif kind == "models":
            row += [",".join(sorted(item.tasks))]  # type: ignore[attr-defined]
        row.append(registry.owner(item.name))
        table.add_row(*row)
    return table


@cli.command("list")
@click.argument("kind", required=False, type=click.Choice(LIST_KINDS))
@click.pass_context
def list_command(ctx: click.Context, kind: str | None) -> None:
    """List attacks, defenses, datasets, models, metrics or suites."""
    host = plugin_host(ctx.obj.get("strict_plugins", False))
    console = Console()
    for name in [kind] if kind else LIST_KINDS:
        console.print(_list_table(name, host))


@cli.command()
@click.pass_context
def plugins(ctx: click.Context) -> None:
    """Every plugin: name, version, where it came from, and whether it loaded."""
    host = state.host if state.host is not None else load_plugins(check=False)
    table = Table(title="medbench plugins")
    for header in ("name", "version", "source", "status", "provides / error"):
        table.add_column(header)
    for info in host.infos:
        if info.status == "loaded":
            detail = "; ".join(f"{k}: {', '.join(v)}" for k, v in info.provides.items() if v)
            status = "[green]loaded[/]"
        else:
            detail = info.error or ""
            status = "[red]failed[/]" if info.status == "failed" else "[yellow]disabled[/]"
        source = info.source + (f"\n{info.location}" if info.location else "")
        table.add_row(info.name, info.version, source, status, detail)
    Console().print(table)
    if ctx.obj.get("strict_plugins") and host.failed():
        ctx.exit(EXIT_USAGE)
