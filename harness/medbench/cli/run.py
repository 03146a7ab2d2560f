"""`medbench run`: a thin layer over :func:`medbench.engine.planning.plan_matrix` and
:func:`medbench.engine.execute.run_matrix`, the engine :func:`medbench.evaluate` uses too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from medbench import __version__
from medbench.cli.app import EXIT_CELLS_FAILED, cli, plugin_host, state
from medbench.config.spec import RunSpec
from medbench.errors import UsageError

SPEC_OPTIONS = (
    "dataset",
    "data_dir",
    "models",
    "weights",
    "checkpoint",
    "normalization",
    "defenses",
    "attacks",
    "n_eval",
    "seed",
    "epochs",
    "eval_batch_size",
    "eot_samples",
    "surrogate",
    "precision",
    "channels_last",
    "cudnn_benchmark",
)
"""Options of ``medbench run`` that override the suite's or spec's key of the same name."""


def _options(function: Any) -> Any:
    """The options of ``medbench run``, in the order ``--help`` shows them."""
    for option in reversed(_OPTIONS):
        function = option(function)
    return function


_OPTIONS = [
    click.option("--suite", help="Suite name (leaderboards/suites/NAME.yaml) or path. Default: smoke."),
    click.option(
        "--spec",
        "spec_file",
        type=click.Path(path_type=Path),
        help="A spec YAML file (suite keys).",
    ),
    click.option("--dataset", help="Dataset plugin name."),
    click.option("--data-dir", type=click.Path(path_type=Path), help="Local data for file-based datasets."),
    click.option(
        "--image-size",
        type=click.IntRange(min=8),
        help="Height and width the dataset resizes images to (datasets with an image_size setting; "
        "imagefolder's default is 64).",
    ),
    click.option(
        "--channels",
        type=click.IntRange(1, 3),
        help="Channels the dataset delivers: 1 (grayscale) or 3 (RGB) (datasets with a channels "
        "setting, e.g. imagefolder; default 1).",
    ),
    click.option(
        "--model",
        "models",
        multiple=True,
        help="Model(s); repeat or comma-separate: a plugin name (smallcnn, resnet18...), a Python "
        "factory path/to/file.py:build or package.module:build (called with the keyword arguments "
        "it names among task, in_channels, num_classes), or a TorchScript file (.pt, .ts).",
    ),
    click.option(
        "--weights",
        help="Weights a model STARTS FROM before a training defense trains it: a local state-dict "
        "file, or 'imagenet' from the local torch hub cache. Identified by the file's contents.",
    ),
    click.option(
        "--checkpoint",
        help="A TRAINED state-dict file, loaded into the model and evaluated as it is (never "
        "retrained): --defense none evaluates it, preprocessing defenses wrap it; training defenses "
        "are refused unless they fine-tune from a checkpoint. Identified by the file's contents.",
    ),
    click.option(
        "--normalization",
        metavar="model|none|imagenet|MEAN,STD",
        help="Input normalisation the model expects, applied after the attack (budgets stay on the "
        "[0, 1] scale): model = the model plugin's own (default; smallcnn: mean 0.5, std 0.25; the "
        "torchvision backbones: ImageNet's, or its grey equivalent 0.449/0.226 on one channel; the 3D "
        "networks: none), none = the model normalises its own input (the default for --model "
        "factories and TorchScript files), imagenet, or per-channel MEAN,STD / M1,M2,M3,S1,S2,S3.",
    ),
    click.option(
        "--defense",
        "defenses",
        multiple=True,
        help="Defense name(s); chains as outer+inner; inline settings as name[key=value,...].",
    ),
    click.option(
        "--attack", "attacks", multiple=True, help="Attack name(s); inline settings as name[key=value,...]."
    ),
    click.option(
        "--eps",
        "eps",
        multiple=True,
        help="Budgets of every eps/sigma attack, on the [0,1] scale (2/255,8/255) or in the "
        "dataset's intensity unit (5HU,10HU).",
    ),
    click.option(
        "--budget",
        "budgets",
        multiple=True,
        help="Budgets of one attack or budget name: NAME=V1,V2 (e.g. q_max=20,30).",
    ),
    click.option(
        "--set",
        "assignments",
        multiple=True,
        help="Plugin setting: kind.name.key=value (e.g. attack.pgd.max_iter=20).",
    ),
    click.option(
        "--n-eval", type=click.IntRange(min=1), help="Test samples to attack (default: the whole test split)."
    ),
    click.option(
        "--epochs",
        type=click.IntRange(min=0),
        help="Training epochs (a defense may set its own, e.g. reformer.epochs).",
    ),
    click.option(
        "--seed", type=click.IntRange(min=0), help="Seed of splits, initialisation, random starts and noise."
    ),
    click.option(
        "--eval-batch-size",
        metavar="N|auto",
        help="Batch size of attacks and predictions (default 128). auto: on a GPU, the largest power of "
        "two whose loss gradients fit in 80% of the free memory (measured per model; a batch that still "
        "runs out of memory is attacked in halves); on a CPU, 128.",
    ),
    click.option(
        "--surrogate",
        help="Transfer attacks: craft on MODEL[:DEFENSE] (same data), evaluate every target.",
    ),
    click.option(
        "--eot-samples",
        type=click.IntRange(min=1),
        help="Gradient draws averaged against randomised defenses (EOT; default 8).",
    ),
    click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
    click.option(
        "--executor",
        type=click.Choice(["local", "devices", "ray"]),
        default="local",
        show_default=True,
        help="local: one process on --device; devices: one worker process per --devices entry, "
        "the defended models dealt out among them; ray: one Ray task per defended model.",
    ),
    click.option("--ray-address", help="Ray cluster to join (default: start a local Ray instance)."),
    click.option(
        "--ray-cpus",
        type=click.IntRange(min=1),
        help="CPUs of the local Ray instance (default: all).",
    ),
    click.option("--devices", help="Devices of the devices executor, e.g. cuda:0,cuda:1 (or cpu,cpu)."),
    click.option("--shard", hidden=True, help="Worker of the devices executor: I/N."),
    click.option("--parent-run-id", hidden=True, help="Worker of the devices executor: the parent run."),
    click.option(
        "--experiment",
        help="MLflow experiment (default: the suite's name; a run that changes the default suite "
        "without --suite or --spec gets its own, <dataset>-<models>-<hash of the options>).",
    ),
    click.option(
        "--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)."
    ),
    click.option(
        "--deterministic",
        is_flag=True,
        help="Deterministic GPU kernels (cuDNN, cuBLAS): identical repeated runs, somewhat slower.",
    ),
    click.option(
        "--precision",
        metavar="fp32|bf16",
        help="bf16: bfloat16 autocast around the network in attacks and predictions (loss, input "
        "gradients and perturbations stay float32; robust accuracy within 0.02 of fp32). Part of the "
        "cell key. Default: fp32.",
    ),
    click.option(
        "--channels-last/--no-channels-last",
        default=None,
        help="Network and inputs in channels-last memory format (channels_last_3d for volumes); "
        "same results as without.",
    ),
    click.option(
        "--compile/--no-compile",
        "compile_model",
        default=None,
        help="torch.compile the network (compiled once when each defended model is first used; "
        "a failure is a one-line error).",
    ),
    click.option(
        "--cudnn-benchmark/--no-cudnn-benchmark",
        default=None,
        help="cuDNN autotuning (torch.backends.cudnn.benchmark); not with --deterministic.",
    ),
    click.option(
        "--rerun",
        is_flag=True,
        help="Run every cell again, also those already FINISHED in the store (default: resume, "
        "skipping them).",
    ),
    click.option("--no-cache", is_flag=True, help="Retrain defended models (no cached weights)."),
    click.option("--json", "as_json", is_flag=True, help="Print one JSON document (every cell) to stdout."),
    click.option("--strict-plugins", is_flag=True, help="Fail when any plugin fails to load."),
]


def spec_from_options(options: dict[str, Any]) -> RunSpec:
    """The suite or spec the options name, with the options that override its keys applied."""
    from medbench.config.spec import DEFAULT_SUITE, load_spec_file, load_suite, with_overrides

    if options["suite"] and options["spec_file"]:
        raise UsageError("give either --suite or --spec, not both")
    if options["spec_file"]:
        spec = load_spec_file(options["spec_file"])
    else:
        spec = load_suite(options["suite"] or DEFAULT_SUITE)
    overrides = {key: options[key] for key in SPEC_OPTIONS}
    overrides["compile"] = options["compile_model"]
    spec = with_overrides(spec, overrides)
    if not (options["suite"] or options["spec_file"]) and _changes_the_matrix(options):
        spec.name = own_experiment_name(spec, options)
    return spec


MATRIX_OPTIONS = (*SPEC_OPTIONS, "eps", "budgets", "assignments", "image_size", "channels")
"""Options that change what a run computes (performance options such as --device do not)."""
PERFORMANCE_OPTIONS = ("eval_batch_size", "precision", "channels_last", "cudnn_benchmark")


def _changes_the_matrix(options: dict[str, Any]) -> bool:
    return any(
        options.get(key) not in (None, (), [], False)
        for key in MATRIX_OPTIONS
        if key not in PERFORMANCE_OPTIONS
    )


def own_experiment_name(spec: RunSpec, options: dict[str, Any]) -> str:
    """The experiment of a run that changes the default suite without naming a suite or spec:
    ``<dataset>-<models>-<hash of the options>``, so that it never lands on the smoke board
    and each configuration has its own (``--experiment`` names one instead)."""
    from medbench.building.cache import stable_hash

    chosen = {key: options.get(key) for key in MATRIX_OPTIONS if key not in PERFORMANCE_OPTIONS}
    digest = stable_hash({k: (list(v) if isinstance(v, tuple) else v) for k, v in chosen.items()}, length=8)
    models = "+".join(Path(m).name.replace(":", "-") for m in spec.models)
    return f"{spec.dataset}-{models}-{digest}"


def _assignments(options: dict[str, Any], spec: RunSpec) -> list[tuple[str, str, str, str]]:
    """``--set`` assignments, and ``--image-size`` / ``--channels`` as the dataset's settings."""
    from medbench.config.spec import parse_assignment

    assignments = [parse_assignment(text) for text in options["assignments"]]
    for option, setting in (("image_size", "image_size"), ("channels", "channels")):
        if options[option] is None:
            continue
        dataset = plugin_host().registries.datasets.get(spec.dataset)
        if setting not in dataset.settings_dict():
            flag = "--" + option.replace("_", "-")
            raise UsageError(f"{flag}: dataset {spec.dataset!r} has no {setting} setting")
        assignments.append(("dataset", spec.dataset, setting, str(options[option])))
    return assignments


@cli.command()
@_options
@click.pass_context
def run(ctx: click.Context, **options: Any) -> None:
    """Run a benchmark matrix and log every cell to MLflow."""
    from medbench.config.budgets import parse_budget_list
    from medbench.config.spec import parse_budget_override
    from medbench.engine.device import make_deterministic, resolve_device
    from medbench.engine.execute import run_matrix
    from medbench.engine.planning import plan_matrix
    from medbench.reporting.progress import RichProgress
    from medbench.wrapping.acceleration import Acceleration, configure_backends

    host = plugin_host(options["strict_plugins"] or ctx.obj.get("strict_plugins", False))
    spec = spec_from_options(options)
    device = resolve_device(options["device"])
    configure_backends(Acceleration.of(spec), device, deterministic=options["deterministic"])
    if options["deterministic"]:
        make_deterministic()
    plan = plan_matrix(
        spec,
        host,
        device,
        eps_override=parse_budget_list(options["eps"]) if options["eps"] else None,
        budget_overrides=dict(parse_budget_override(text) for text in options["budgets"]),
        assignments=_assignments(options, spec),
        experiment=options["experiment"],
    )
    console = Console(stderr=True)
    console.print(
        escape(
            f"medbench {__version__}: {len(plan.cells)} cells on {plan.dataset.name} "
            f"({plan.n_eval} test samples) on {device}; "
            + "; ".join(f"{n} {plan.attacks[n].budget_name}={plan.budget_text(n)}" for n in plan.budgets)
        )
    )
    progress = RichProgress(console)
    with progress:
        outcome = run_matrix(plan, host, _execution(options), progress)
    if options["shard"] is not None:  # a worker: its coordinator reports
        ctx.exit(EXIT_CELLS_FAILED if outcome.failed else 0)
    _report(outcome, options["as_json"], console)
    if outcome.failed:
        console.print(f"[red]{len(outcome.failed)} of {len(outcome.results)} cells failed[/]")
        ctx.exit(EXIT_CELLS_FAILED)


def _execution(options: dict[str, Any]) -> Any:
    from medbench.engine.execute import Execution
    from medbench.recording.tracking import resolve_tracking_uri

    shard = _parse_shard(options["shard"], options["parent_run_id"])
    return Execution(
        tracking_uri=resolve_tracking_uri(options["tracking_uri"]),
        rerun=options["rerun"],
        use_cache=not options["no_cache"],
        executor=options["executor"],
        devices=_parse_devices(options["devices"]) if options["executor"] == "devices" else [],
        ray_address=options["ray_address"],
        ray_cpus=options["ray_cpus"],
        argv=state.argv,
        shard=shard,
        parent_run_id=options["parent_run_id"],
    )


def _report(outcome: Any, as_json: bool, console: Console) -> None:
    """The results on stdout (a table, or the JSON document), the flags and where the runs are."""
    from medbench.reporting.report import results_document, results_table

    plan = outcome.plan
    if as_json:
        document = results_document(plan.experiment, plan.parent_run_id, plan.dataset.name, outcome.results)
        document["sanity"] = [flag.as_dict() for flag in outcome.flags]
        click.echo(json.dumps(document, indent=2))
    else:
        Console().print(results_table(outcome.results, f"medbench {plan.spec.name} on {plan.dataset.name}"))
    for flag in outcome.flags:
        console.print(f"[yellow]{escape(flag.row)}: {flag.mark} ({flag.check})[/]: {escape(flag.message)}")
    console.print(
        f"MLflow: experiment {plan.experiment!r}, parent run {plan.parent_run_id} "
        f"({outcome.tracking_uri}); `medbench ui` to browse"
    )


def _parse_shard(text: str | None, parent_run_id: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit()) or not 0 <= int(index) < int(count) or not parent_run_id:
        raise UsageError(f"malformed --shard {text!r}: expected I/N with 0 <= I < N, and --parent-run-id")
    return int(index), int(count)


def _parse_devices(text: str | None) -> list[str]:
    """``cuda:0,cuda:1`` → checked device names; every device must exist."""
    from medbench.engine.device import resolve_device

    names = [item.strip() for item in (text or "").split(",") if item.strip()]
    if not names:
        raise UsageError("--executor devices needs --devices, e.g. --devices cuda:0,cuda:1")
    for name in names:
        resolve_device(name)
    return names
