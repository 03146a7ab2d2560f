"""Run specifications: suites (YAML), ``--spec`` files and command-line overrides.

A suite or spec file is a YAML mapping with these keys (all optional except where a
suite needs them)::

    name: smoke                     # experiment name unless --experiment is given
    description: one line
    dataset: phantom2d
    data_dir: null                  # for file-based datasets
    models: [smallcnn]
    weights: null                   # model weights: null, a local file, or imagenet
    defenses: [none, at-pgd]
    attacks: [fgsm, pgd, gn]
    budgets:                        # by budget name (eps, sigma, ...) or by attack name
      eps: [2/255, 8/255]
      sigma: [2/255, 8/255]           # or in the dataset's unit: eps: [5HU, 10HU]
    n_eval: null                    # test samples to attack; null = the whole test split
    seed: 0
    training: {epochs: 5, batch_size: 64, lr: 0.001, weight_decay: 0.0}
    eval_batch_size: 128            # or auto: the largest power of two that fits the GPU
    eot_samples: 8                  # gradient draws averaged against randomised defences (EOT)
    precision: fp32                 # or bf16: autocast around the network (attacks, evaluation)
    channels_last: false            # network and inputs in channels-last memory format
    compile: false                  # torch.compile the network
    cudnn_benchmark: false          # cuDNN autotuning (not with --deterministic)
    surrogate: null                 # MODEL[:DEFENSE]: craft on it, evaluate on every target
    rank_by: null                   # the leaderboard's ranking metric: accuracy, auc or dice
    settings:                       # plugin settings, by kind then name
      attack: {pgd: {max_iter: 10}}
      defense: {at-pgd: {eps: 8/255}}
      model: {}
      dataset: {phantom2d: {image_size: 64}}

Unknown keys are an error with a did-you-mean. YAML is always loaded with ``safe_load``, and
refused when it is larger than :data:`MAX_SPEC_BYTES`, empty, nested deeper than Python's
recursion allows or, with its aliases expanded, more than :data:`MAX_SPEC_NODES` values (a
"billion laughs" alias bomb is a few hundred bytes).
"""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from medbench.config.budgets import RequestedBudget, parse_budget_list, shown
from medbench.config.settings import build_settings
from medbench.errors import UsageError, first_line, unknown_name_message

DEFAULT_SUITE = "smoke"
SUITES_ENV = "MEDBENCH_SUITES_PATH"
PLUGIN_KINDS = ("attack", "defense", "model", "dataset")
MAX_SPEC_BYTES = 1_000_000
MAX_SPEC_NODES = 100_000
"""The most values (scalars, lists, mappings) a spec may hold once its YAML aliases are expanded."""
MAX_SEED = 2**63 - 1
"""The largest seed: torch takes 64-bit seeds, and the surrogate and crops use ``seed + 1``."""

PRECISIONS = ("fp32", "bf16")
PRECISION_ALIASES = {"float32": "fp32", "bfloat16": "bf16"}
AUTO = "auto"
"""``eval_batch_size: auto``: chosen from the free GPU memory (:mod:`medbench.wrapping.acceleration`)."""


def parse_precision(value: Any, source: str = "--precision") -> str:
    """``fp32`` or ``bf16`` (also ``float32``, ``bfloat16``, any case); else a did-you-mean."""
    if not isinstance(value, str):
        raise UsageError(f"{source} must be one of {', '.join(PRECISIONS)}, got {value!r}")
    name = value.strip().lower()
    name = PRECISION_ALIASES.get(name, name)
    if name not in PRECISIONS:
        raise UsageError(f"{source}: {unknown_name_message('precision', value, PRECISIONS)}")
    return name


def parse_batch_size(value: Any, source: str = "--eval-batch-size") -> int | str:
    """A positive integer, or ``auto``."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == AUTO:
            return AUTO
        if text.isdigit():
            value = int(text)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{source} must be a positive integer or 'auto', got {value!r}")
    return value


@dataclass(frozen=True)
class TrainingSettings:
    """How defenses train models (Adam; every defense uses these unless its settings say otherwise).

    Attributes:
        epochs: Passes over the training split.
        batch_size: Training batch size.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        keep_best: Keep the weights of the epoch with the best clean validation accuracy
            (the last epoch's on ties) instead of the last epoch's, as paper 001 does.
            Short runs on small data oscillate; this makes them repeatable.
    """

    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    keep_best: bool = True

    def validate(self) -> None:
        if self.epochs < 0:
            raise ValueError("epochs must be >= 0")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.lr <= 0:
            raise ValueError("lr must be > 0")


@dataclass
class RunSpec:
    """Everything that defines one ``medbench run``: a matrix and how to run it."""

    name: str = "medbench"
    description: str = ""
    dataset: str = "phantom2d"
    data_dir: Path | None = None
    models: list[str] = field(default_factory=lambda: ["smallcnn"])
    weights: str | None = None
    """Weights a model starts from before training: a local file, or a named set (``imagenet``)."""
    checkpoint: str | None = None
    """A trained state-dict file, loaded into every model and evaluated as it is (never retrained)."""
    normalization: str | None = None
    """The models' input normalisation: None or ``model`` (each model's own), ``none``,
    ``imagenet`` or ``MEAN,STD`` (:func:`medbench.building.user_models.parse_normalization`)."""
    defenses: list[str] = field(default_factory=lambda: ["none"])
    attacks: list[str] = field(default_factory=lambda: ["fgsm"])
    budgets: dict[str, list[RequestedBudget]] = field(default_factory=dict)
    n_eval: int | None = None
    seed: int = 0
    training: TrainingSettings = field(default_factory=TrainingSettings)
    eval_batch_size: int | str = 128
    """Samples per batch of attacks and predictions, or ``auto`` (:mod:`medbench.wrapping.acceleration`)."""
    eot_samples: int = 8
    surrogate: str | None = None
    precision: str = "fp32"
    """``fp32``, or ``bf16``: bfloat16 autocast around the network (:mod:`medbench.wrapping.acceleration`)."""
    channels_last: bool = False
    compile: bool = False
    cudnn_benchmark: bool = False
    rank_by: str | None = None
    """The robust metric ``medbench leaderboard`` ranks this suite by (default: the task's)."""
    settings: dict[str, dict[str, dict[str, Any]]] = field(
        default_factory=lambda: {kind: {} for kind in PLUGIN_KINDS}
    )
    source: str = "defaults"

    def plugin_settings(self, kind: str, name: str) -> dict[str, Any]:
        """Settings given for plugin ``name`` of ``kind`` (``attack``, ``defense``, ...)."""
        return dict(self.settings.get(kind, {}).get(name, {}))


RANKING_METRICS = ("accuracy", "auc", "dice")
"""Metrics a leaderboard can rank by (higher is better)."""

_SPEC_KEYS = {f.name for f in fields(RunSpec)} - {"source"}


def split_outside_brackets(text: str, separator: str) -> list[str]:
    """Split ``text`` at ``separator`` except inside ``[...]``, stripping the parts.

    ``"none,dcnn[lambda_n=1,lambda_a=0]"`` → ``["none", "dcnn[lambda_n=1,lambda_a=0]"]``.
    """
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for char in text:
        if char == "[":
            depth += 1
        elif char == "]":
            depth = max(0, depth - 1)
        if char == separator and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    return parts


def _require_list_of_names(key: str, value: Any) -> list[str]:
    if isinstance(value, str):
        value = split_outside_brackets(value, ",")
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise UsageError(f"spec key {key!r} must be a non-empty list of names, got {shown(value)}")
    return value


def _require_int(key: str, value: Any, minimum: int, maximum: int = MAX_SEED) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"spec key {key!r} must be an integer, got {shown(value)}")
    if value < minimum:
        raise UsageError(f"spec key {key!r} must be >= {minimum}, got {shown(value)}")
    if value > maximum:
        raise UsageError(f"spec key {key!r} must be <= {maximum}, got {shown(value)}")
    return value


def _parse_settings(value: Any) -> dict[str, dict[str, dict[str, Any]]]:
    result: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in PLUGIN_KINDS}
    if value is None:
        return result
    if not isinstance(value, Mapping):
        raise UsageError("spec key 'settings' must be a mapping of kind -> name -> settings")
    for kind, by_name in value.items():
        if kind not in PLUGIN_KINDS:
            raise UsageError(
                f"spec 'settings': {unknown_name_message('plugin kind', str(kind), PLUGIN_KINDS)}"
            )
        if not isinstance(by_name, Mapping):
            raise UsageError(f"spec 'settings.{kind}' must be a mapping of name -> settings")
        for name, values in by_name.items():
            if not isinstance(values, Mapping):
                raise UsageError(f"spec 'settings.{kind}.{name}' must be a mapping of setting -> value")
            result[kind][str(name)] = {str(k): v for k, v in values.items()}
    return result


def spec_from_mapping(data: Any, source: str) -> RunSpec:
    """Validate a parsed YAML mapping and turn it into a :class:`RunSpec`."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise UsageError(f"{source}: a spec must be a YAML mapping, got {type(data).__name__}")
    for key in data:
        if key not in _SPEC_KEYS:
            raise UsageError(f"{source}: {unknown_name_message('spec key', str(key), _SPEC_KEYS)}")
    spec = RunSpec(source=source)
    try:
        for key, value in data.items():
            if key in {"models", "defenses", "attacks"}:
                setattr(spec, key, _require_list_of_names(key, value))
            elif key in {"name", "description", "dataset"}:
                if not isinstance(value, str) or (key != "description" and not value):
                    raise UsageError(f"spec key {key!r} must be a non-empty string, got {shown(value)}")
                setattr(spec, key, value)
            elif key in {"weights", "checkpoint", "normalization", "data_dir"}:
                if value is not None and (not isinstance(value, str) or not value.strip()):
                    kind = "a path (a non-empty string)" if key != "normalization" else "a non-empty string"
                    raise UsageError(f"spec key {key!r} must be {kind} or null, got {shown(value)}")
                if key == "data_dir":
                    spec.data_dir = None if value is None else Path(value)
                else:
                    setattr(spec, key, value)
            elif key == "budgets":
                if not isinstance(value, Mapping):
                    raise UsageError("spec key 'budgets' must map a budget or attack name to a list")
                spec.budgets = {str(k): parse_budget_list(v) for k, v in value.items()}
            elif key == "n_eval":
                spec.n_eval = None if value is None else _require_int(key, value, 1)
            elif key == "seed":
                spec.seed = _require_int(key, value, 0)
            elif key == "eval_batch_size":
                spec.eval_batch_size = parse_batch_size(value, f"spec key {key!r}")
            elif key == "precision":
                spec.precision = parse_precision(value, f"spec key {key!r}")
            elif key in {"channels_last", "compile", "cudnn_benchmark"}:
                if not isinstance(value, bool):
                    raise UsageError(f"spec key {key!r} must be true or false, got {shown(value)}")
                setattr(spec, key, value)
            elif key == "rank_by":
                if value is not None and value not in RANKING_METRICS:
                    raise UsageError(
                        f"spec key 'rank_by' must be one of {', '.join(RANKING_METRICS)} or null, "
                        f"got {shown(value)}"
                    )
                spec.rank_by = value
            elif key == "eot_samples":
                spec.eot_samples = _require_int(key, value, 1)
            elif key == "surrogate":
                if value is not None and (not isinstance(value, str) or not value):
                    raise UsageError(
                        f"spec key 'surrogate' must be MODEL or MODEL:DEFENSE, got {shown(value)}"
                    )
                spec.surrogate = value
            elif key == "training":
                if not isinstance(value, Mapping):
                    raise UsageError("spec key 'training' must be a mapping")
                spec.training = build_settings(TrainingSettings, value, "spec 'training'")
            elif key == "settings":
                spec.settings = _parse_settings(value)
    except UsageError as error:
        raise UsageError(f"{source}: {error}") from None
    return spec


def load_spec_file(path: Path) -> RunSpec:
    """Read and validate a spec file (``--spec``)."""
    if not path.is_file():
        raise UsageError(f"spec file not found: {path}")
    if path.stat().st_size > MAX_SPEC_BYTES:
        raise UsageError(f"spec file {path} is larger than {MAX_SPEC_BYTES} bytes")
    try:
        text = path.read_text(encoding="utf-8")
        data = _safe_load_bounded(text, path)
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise UsageError(f"{path}: not valid YAML ({first_line(error, with_type=False)})") from None
    except RecursionError:
        raise UsageError(f"{path}: not valid YAML (nested too deeply)") from None
    if data is None:
        raise UsageError(f"{path}: the spec is empty; expected a YAML mapping of spec keys")
    return spec_from_mapping(data, str(path))


def _safe_load_bounded(text: str, path: Path) -> Any:
    """``yaml.safe_load`` that refuses a document of more than :data:`MAX_SPEC_NODES` values
    once its aliases are expanded (or one that contains itself), before constructing it.

    ``safe_load`` shares aliased values instead of copying them, so loading an alias bomb is
    cheap; everything that walks the result (validation, error messages, MLflow params) is not.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expanded_size(node, path)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_expanded_size(root: yaml.Node, path: Path) -> None:
    """Raise :class:`UsageError` when the node graph, aliases expanded, exceeds :data:`MAX_SPEC_NODES`."""
    sizes: dict[int, int] = {}
    active: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [item for pair in node.value for item in pair]
        if children_done:
            active.discard(key)
            sizes[key] = min(1 + sum(sizes[id(child)] for child in children), MAX_SPEC_NODES + 1)
            if sizes[key] > MAX_SPEC_NODES:
                raise UsageError(
                    f"{path}: the spec holds more than {MAX_SPEC_NODES} values once its YAML aliases "
                    "are expanded; refusing it"
                )
            continue
        if key in sizes:
            continue
        if key in active:
            raise UsageError(f"{path}: the spec contains itself through a YAML alias; refusing it")
        active.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in sizes)


# --------------------------------------------------------------------------- suites


def suite_dirs() -> list[Path]:
    """Where suites are looked up, in order.

    ``$MEDBENCH_SUITES_PATH`` (``os.pathsep``-separated), ``./leaderboards/suites``, the
    source checkout's ``leaderboards/suites`` and ``<prefix>/share/medbench/suites`` of an
    installed wheel.
    """
    dirs = [Path(p) for p in os.environ.get(SUITES_ENV, "").split(os.pathsep) if p]
    dirs.append(Path.cwd() / "leaderboards" / "suites")
    dirs.append(Path(__file__).resolve().parents[3] / "leaderboards" / "suites")
    dirs.append(Path(sys.prefix) / "share" / "medbench" / "suites")
    unique: list[Path] = []
    for directory in dirs:
        if directory not in unique:
            unique.append(directory)
    return unique


def available_suites() -> dict[str, Path]:
    """Every suite name found on the search path (first match wins)."""
    found: dict[str, Path] = {}
    for directory in suite_dirs():
        if directory.is_dir():
            for path in sorted(directory.glob("*.yaml")):
                found.setdefault(path.stem, path)
    return found


def load_suite(name: str) -> RunSpec:
    """Load suite ``name`` (a name on the search path, or a path to a YAML file)."""
    candidate = Path(name)
    if candidate.suffix in {".yaml", ".yml"} and candidate.is_file():
        return load_spec_file(candidate)
    suites = available_suites()
    if name not in suites:
        raise UsageError(unknown_name_message("suite", name, suites))
    spec = load_spec_file(suites[name])
    return spec


# --------------------------------------------------------------------------- CLI overrides


def parse_assignment(text: str) -> tuple[str, str, str, str]:
    """Parse ``--set kind.name.key=value`` into its four parts."""
    if "=" not in text:
        raise UsageError(f"malformed --set {text!r}: expected kind.name.key=value")
    target, value = text.split("=", 1)
    parts = target.split(".")
    if len(parts) != 3 or not all(parts):
        raise UsageError(
            f"malformed --set {text!r}: expected kind.name.key=value, e.g. attack.pgd.max_iter=20"
        )
    kind, name, key = parts
    if kind not in PLUGIN_KINDS:
        raise UsageError(
            f"malformed --set {text!r}: {unknown_name_message('plugin kind', kind, PLUGIN_KINDS)}"
        )
    return kind, name, key, value


def parse_budget_override(text: str) -> tuple[str, list[RequestedBudget]]:
    """Parse ``--budget NAME=2/255,8/255`` (NAME: an attack or a budget name)."""
    if "=" not in text:
        raise UsageError(f"malformed --budget {text!r}: expected NAME=VALUES, e.g. q_max=20,30")
    name, values = text.split("=", 1)
    if not name.strip():
        raise UsageError(f"malformed --budget {text!r}: empty name")
    return name.strip(), parse_budget_list(values)


def with_overrides(spec: RunSpec, overrides: Mapping[str, Any]) -> RunSpec:
    """Return a copy of ``spec`` with the command line's values applied (None = not given)."""
    result = copy.deepcopy(spec)
    for key in (
        "dataset",
        "weights",
        "checkpoint",
        "normalization",
        "n_eval",
        "seed",
        "eval_batch_size",
        "eot_samples",
        "surrogate",
    ):
        if overrides.get(key) is not None:
            setattr(result, key, overrides[key])
    if overrides.get("eval_batch_size") is not None:
        result.eval_batch_size = parse_batch_size(overrides["eval_batch_size"])
    if overrides.get("precision") is not None:
        result.precision = parse_precision(overrides["precision"])
    for key in ("channels_last", "compile", "cudnn_benchmark"):
        if overrides.get(key) is not None:
            setattr(result, key, bool(overrides[key]))
    if overrides.get("seed") is not None and not 0 <= overrides["seed"] <= MAX_SEED:
        raise UsageError(f"--seed must be between 0 and {MAX_SEED}, got {shown(overrides['seed'])}")
    if overrides.get("data_dir") is not None:
        result.data_dir = Path(overrides["data_dir"])
    for key in ("models", "defenses", "attacks"):
        names: Sequence[str] | None = overrides.get(key)
        if names:
            result_names: list[str] = []
            for item in names:
                result_names.extend(part for part in split_outside_brackets(item, ",") if part)
            setattr(result, key, result_names)
    if overrides.get("epochs") is not None:
        result.training = build_settings(
            TrainingSettings, {**_as_dict(result.training), "epochs": overrides["epochs"]}, "--epochs"
        )
    return result


def _as_dict(settings: TrainingSettings) -> dict[str, Any]:
    return {f.name: getattr(settings, f.name) for f in fields(settings)}
