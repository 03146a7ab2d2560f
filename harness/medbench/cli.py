"""The ``medbench`` command line (DESIGN.md §4).

Exit codes: 0 every cell finished; 1 some cells failed (the others ran and were logged);
2 bad usage or input (one line on stderr, nothing recorded as a success).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from medbench import __version__
from medbench.budgets import format_budgets, parse_budget_list
from medbench.errors import MedbenchError, UsageError
from medbench.leaderboard.render import FORMATS
from medbench.plugins import PluginHost, load_plugins

EXIT_OK, EXIT_CELLS_FAILED, EXIT_USAGE = 0, 1, 2
DEBUG_ENV = "MEDBENCH_DEBUG"
"""Set to 1 to see the traceback of an internal error instead of its one-line summary."""
LIST_KINDS = ("attacks", "defenses", "datasets", "models", "metrics", "suites")
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


class _State:
    host: PluginHost | None = None
    argv: list[str] = []
    """The arguments after ``medbench`` (the devices executor hands them to its workers)."""


_state = _State()


def _host(strict: bool = False) -> PluginHost:
    if _state.host is None:
        _state.host = load_plugins(strict=strict, check=False)
    _state.host.strict = _state.host.strict or strict
    _state.host.check()
    return _state.host


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


@cli.command()
@click.option("--suite", help="Suite name (leaderboards/suites/NAME.yaml) or path. Default: smoke.")
@click.option(
    "--spec", "spec_file", type=click.Path(path_type=Path), help="A spec YAML file (same keys as a suite)."
)
@click.option("--dataset", help="Dataset plugin name.")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Local data for file-based datasets.")
@click.option("--model", "models", multiple=True, help="Model name(s); repeat or comma-separate.")
@click.option("--weights", help="Model weights: a local file, or 'imagenet' from the local torch hub cache.")
@click.option(
    "--defense",
    "defenses",
    multiple=True,
    help="Defense name(s); chains as outer+inner; inline settings as name[key=value,...].",
)
@click.option(
    "--attack", "attacks", multiple=True, help="Attack name(s); inline settings as name[key=value,...]."
)
@click.option(
    "--eps",
    "eps",
    multiple=True,
    help="Budgets of every eps/sigma attack, on the [0,1] scale (2/255,8/255) or in the "
    "dataset's intensity unit (5HU,10HU).",
)
@click.option(
    "--budget",
    "budgets",
    multiple=True,
    help="Budgets of one attack or budget name: NAME=V1,V2 (e.g. q_max=20,30).",
)
@click.option(
    "--set",
    "assignments",
    multiple=True,
    help="Plugin setting: kind.name.key=value (e.g. attack.pgd.max_iter=20).",
)
@click.option(
    "--n-eval", type=click.IntRange(min=1), help="Test samples to attack (default: the whole test split)."
)
@click.option(
    "--epochs",
    type=click.IntRange(min=0),
    help="Training epochs (a defense may set its own, e.g. reformer.epochs).",
)
@click.option(
    "--seed", type=click.IntRange(min=0), help="Seed of splits, initialisation, random starts and noise."
)
@click.option(
    "--eval-batch-size",
    metavar="N|auto",
    help="Batch size of attacks and predictions (default 128). auto: on a GPU, the largest power of "
    "two whose loss gradients fit in 80% of the free memory (measured per model; a batch that still "
    "runs out of memory is attacked in halves); on a CPU, 128.",
)
@click.option(
    "--surrogate",
    help="Transfer attacks: craft on MODEL[:DEFENSE] (trained on the same data), evaluate on every target.",
)
@click.option(
    "--eot-samples",
    type=click.IntRange(min=1),
    help="Gradient draws averaged against randomised defenses (EOT; default 8).",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--executor",
    type=click.Choice(["local", "devices", "ray"]),
    default="local",
    show_default=True,
    help="local: one process on --device; devices: one worker process per --devices entry, "
    "the defended models dealt out among them; ray: one Ray task per defended model.",
)
@click.option("--ray-address", help="Ray cluster to join (default: start a local Ray instance).")
@click.option(
    "--ray-cpus", type=click.IntRange(min=1), help="CPUs of the local Ray instance (default: all of them)."
)
@click.option("--devices", help="Devices of the devices executor, e.g. cuda:0,cuda:1 (or cpu,cpu).")
@click.option("--shard", hidden=True, help="Worker of the devices executor: I/N.")
@click.option("--parent-run-id", hidden=True, help="Worker of the devices executor: the parent run.")
@click.option("--experiment", help="MLflow experiment (default: the suite's name).")
@click.option(
    "--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)."
)
@click.option(
    "--deterministic",
    is_flag=True,
    help="Deterministic GPU kernels (cuDNN, cuBLAS): identical repeated runs, somewhat slower.",
)
@click.option(
    "--precision",
    metavar="fp32|bf16",
    help="bf16: bfloat16 autocast around the network in attacks and predictions (loss, input "
    "gradients and perturbations stay float32; robust accuracy within 0.02 of fp32). Part of the "
    "cell key. Default: fp32.",
)
@click.option(
    "--channels-last/--no-channels-last",
    default=None,
    help="Network and inputs in channels-last memory format (channels_last_3d for volumes); "
    "same results as without.",
)
@click.option(
    "--compile/--no-compile",
    "compile_model",
    default=None,
    help="torch.compile the network (compiled once when each defended model is first used; "
    "a failure is a one-line error).",
)
@click.option(
    "--cudnn-benchmark/--no-cudnn-benchmark",
    default=None,
    help="cuDNN autotuning (torch.backends.cudnn.benchmark); not with --deterministic.",
)
@click.option(
    "--rerun",
    is_flag=True,
    help="Run every cell again, also those already FINISHED in the store (default: resume, skipping them).",
)
@click.option("--no-cache", is_flag=True, help="Retrain defended models instead of loading cached weights.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document with every cell to stdout.")
@click.option("--strict-plugins", is_flag=True, help="Fail when any plugin fails to load.")
@click.pass_context
def run(ctx: click.Context, **options: Any) -> None:
    """Run a benchmark matrix and log every cell to MLflow."""
    from medbench.acceleration import Acceleration, configure_backends
    from medbench.cache import ModelCache
    from medbench.device import make_deterministic, resolve_device
    from medbench.matrix import MatrixRunner, plan_matrix
    from medbench.progress import RichProgress
    from medbench.report import results_document, results_table
    from medbench.spec import (
        DEFAULT_SUITE,
        load_spec_file,
        load_suite,
        parse_assignment,
        parse_budget_override,
        with_overrides,
    )
    from medbench.tracking import Tracker, resolve_tracking_uri

    host = _host(options["strict_plugins"] or ctx.obj.get("strict_plugins", False))
    if options["suite"] and options["spec_file"]:
        raise UsageError("give either --suite or --spec, not both")
    if options["spec_file"]:
        spec = load_spec_file(options["spec_file"])
    else:
        spec = load_suite(options["suite"] or DEFAULT_SUITE)
    spec = with_overrides(
        spec,
        {
            "dataset": options["dataset"],
            "data_dir": options["data_dir"],
            "models": options["models"],
            "weights": options["weights"],
            "defenses": options["defenses"],
            "attacks": options["attacks"],
            "n_eval": options["n_eval"],
            "seed": options["seed"],
            "epochs": options["epochs"],
            "eval_batch_size": options["eval_batch_size"],
            "eot_samples": options["eot_samples"],
            "surrogate": options["surrogate"],
            "precision": options["precision"],
            "channels_last": options["channels_last"],
            "compile": options["compile_model"],
            "cudnn_benchmark": options["cudnn_benchmark"],
        },
    )
    eps_override = parse_budget_list(options["eps"]) if options["eps"] else None
    budget_overrides = dict(parse_budget_override(text) for text in options["budgets"])
    assignments = [parse_assignment(text) for text in options["assignments"]]
    device = resolve_device(options["device"])
    configure_backends(Acceleration.of(spec), device, deterministic=options["deterministic"])
    if options["deterministic"]:
        make_deterministic()
    plan = plan_matrix(
        spec,
        host,
        device,
        eps_override=eps_override,
        budget_overrides=budget_overrides,
        assignments=assignments,
        experiment=options["experiment"],
    )
    console = Console(stderr=True)
    console.print(
        escape(
            f"medbench {__version__}: {len(plan.cells)} cells on {plan.dataset.name} "
            f"({plan.n_eval} test samples) on {device}; "
            + "; ".join(
                f"{name} {plan.attacks[name].budget_name}={plan.budget_text(name)}" for name in plan.budgets
            )
        )
    )
    tracker = Tracker(resolve_tracking_uri(options["tracking_uri"]), plan.experiment)
    cache = ModelCache(enabled=not options["no_cache"])
    progress = RichProgress(console)
    shard = _parse_shard(options["shard"], options["parent_run_id"])
    if shard is not None:  # a worker of the devices executor
        plan.parent_run_id = options["parent_run_id"]
        worker = MatrixRunner(plan, host, tracker, progress, cache, rerun=options["rerun"], shard=shard)
        with progress:
            done = worker.run()
        ctx.exit(EXIT_CELLS_FAILED if any(r.status != "FINISHED" for r in done) else EXIT_OK)
    runner = MatrixRunner(plan, host, tracker, progress, cache, rerun=options["rerun"])
    if options["executor"] == "devices":
        from medbench.executors import run_workers

        devices = _parse_devices(options["devices"])
        run_workers(
            _state.argv,
            devices,
            parent_run_id=runner.start_parent_run(),
            tracking_uri=tracker.tracking_uri,
            experiment=plan.experiment,
            console=console,
        )
        runner.rerun = False  # keep what the workers just finished
    elif options["executor"] == "ray":
        from medbench.executors import run_on_ray

        run_on_ray(
            _state.argv,
            group_count=len(runner.groups()),
            parent_run_id=runner.start_parent_run(),
            tracking_uri=tracker.tracking_uri,
            experiment=plan.experiment,
            address=options["ray_address"],
            num_cpus=options["ray_cpus"],
            gpu=device.type == "cuda",
            retries=2,
            console=console,
        )
        runner.rerun = False
    with progress:
        results = runner.run()
    assert plan.parent_run_id is not None
    if options["as_json"]:
        document = results_document(plan.experiment, plan.parent_run_id, plan.dataset.name, results)
        document["sanity"] = [flag.as_dict() for flag in runner.flags]
        click.echo(json.dumps(document, indent=2))
    else:
        Console().print(results_table(results, f"medbench {plan.spec.name} on {plan.dataset.name}"))
    for flag in runner.flags:
        console.print(f"[yellow]{escape(flag.row)}: {flag.mark} ({flag.check})[/]: {escape(flag.message)}")
    console.print(
        f"MLflow: experiment {plan.experiment!r}, parent run {plan.parent_run_id} "
        f"({tracker.tracking_uri}); `medbench ui` to browse"
    )
    failed = [r for r in results if r.status != "FINISHED"]
    if failed:
        console.print(f"[red]{len(failed)} of {len(results)} cells failed[/]")
        ctx.exit(EXIT_CELLS_FAILED)


def _parse_shard(text: str | None, parent_run_id: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit()) or not 0 <= int(index) < int(count) or not parent_run_id:
        raise UsageError(f"malformed --shard {text!r}: expected I/N with 0 <= I < N, and --parent-run-id")
    return int(index), int(count)


def _parse_devices(text: str | None) -> list[str]:
    """``cuda:0,cuda:1`` → checked device names; every device must exist."""
    from medbench.device import resolve_device

    names = [item.strip() for item in (text or "").split(",") if item.strip()]
    if not names:
        raise UsageError("--executor devices needs --devices, e.g. --devices cuda:0,cuda:1")
    for name in names:
        resolve_device(name)
    return names


def _list_table(kind: str, host: PluginHost) -> Table:
    from medbench.spec import available_suites, load_suite

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
    host = _host(ctx.obj.get("strict_plugins", False))
    console = Console()
    for name in [kind] if kind else LIST_KINDS:
        console.print(_list_table(name, host))


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
    from medbench.leaderboard.board import load_board, render_board
    from medbench.spec import available_suites, load_suite
    from medbench.tracking import resolve_tracking_uri

    if Path(suite).suffix in {".yaml", ".yml"} or suite in available_suites():
        spec = load_suite(suite)  # a name or a path, as `medbench run --suite` takes
        suite, metric = spec.name, metric or spec.rank_by
    uri = resolve_tracking_uri(tracking_uri)
    board = load_board(uri, experiment or suite, suite, metric)
    stderr = Console(stderr=True)
    if board.unfinished:
        stderr.print(f"{board.unfinished} cell run(s) that did not finish are left out", markup=False)
    if fmt == "table" and output is None:
        from medbench.leaderboard.render import rich_table

        Console(width=None if sys.stdout.isatty() else 200).print(rich_table(board.entries, board.title))
        return
    text = render_board(board, fmt)
    if output is None:
        click.echo(text, nl=False)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    stderr.print(f"wrote {output} ({len(board.entries)} rows, {fmt})", markup=False)


@cli.command()
@click.pass_context
def plugins(ctx: click.Context) -> None:
    """Every plugin: name, version, where it came from, and whether it loaded."""
    host = _state.host if _state.host is not None else load_plugins(check=False)
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


@cli.command()
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--host",
    "bind_host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind (loopback by default).",
)
@click.option("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db).")
def ui(port: int, bind_host: str, tracking_uri: str | None) -> None:
    """Start the MLflow UI on 127.0.0.1 against the same store as `medbench run`."""
    from medbench.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    if bind_host not in LOOPBACK_HOSTS:
        click.echo(
            f"warning: the MLflow UI has no authentication; binding to {bind_host} exposes every run",
            err=True,
        )
    click.echo(f"MLflow UI for {uri} on http://{bind_host}:{port} (Ctrl-C to stop)", err=True)
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        bind_host,
        "--port",
        str(port),
    ]
    try:
        raise SystemExit(subprocess.call(command))
    except KeyboardInterrupt:
        raise SystemExit(0) from None


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: turns usage errors into one line on stderr and exit code 2."""
    try:
        host = load_plugins(check=False)
        _state.host = host
        arguments = list(sys.argv[1:] if argv is None else argv)
        _state.argv = arguments[arguments.index("run") + 1 :] if "run" in arguments else arguments
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
        first = (str(error).strip().splitlines() or [""])[0]
        click.echo(
            f"medbench: internal error: {type(error).__name__}: {first} "
            f"(set {DEBUG_ENV}=1 for the traceback)",
            err=True,
        )
        raise SystemExit(EXIT_CELLS_FAILED) from None
    raise SystemExit(code if isinstance(code, int) else EXIT_OK)
