"""Hostile and broken budgets, spec files and ``--set`` values.

Every case must end in a :class:`~medbench.errors.UsageError` with a one-line message (through
the CLI: exit code 2, one line on stderr, nothing recorded), never a hang, a raw traceback or a
run recorded as valid. Already covered elsewhere, so not repeated here:

* ``--eps 8/0``, ``-1``, ``abc``; ``--budget q_max=20``; ``--set`` typos and ``nonsense``:
  ``tests/harness/test_cli.py::test_bad_input_is_one_line_and_exit_code_2``;
* ``nan``, ``inf``, ``1/-255``, empty, ``True``; empty list entries:
  ``tests/harness/test_budgets.py``;
* ``--eps 5HU`` on phantom2d, ``5mm`` on phantom3d, ``q_max=20HU``:
  ``tests/harness/test_unit_budgets.py::test_unit_budgets_that_cannot_apply_are_usage_errors``;
* unknown spec keys, invalid YAML, ``budgets: {eps: [8/0]}``:
  ``tests/harness/test_cli.py::test_spec_file_with_unknown_keys_is_rejected``;
* wrong types of ``models``, ``seed``, ``n_eval``, ``training``, ``settings``, a list document:
  ``tests/harness/test_spec.py::test_spec_rejects_unknown_keys_and_bad_types``;
* ``!!python/object/apply``: ``tests/harness/test_spec.py::test_yaml_is_loaded_safely``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import io
import math
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medbench.cli import main
from medbench.config.budgets import (
    UnitBudget,
    format_budget,
    parse_budget,
    parse_budget_list,
    parse_budget_or_unit,
)
from medbench.config.spec import _SPEC_KEYS, MAX_SPEC_NODES, RunSpec, load_spec_file, spec_from_mapping
from medbench.errors import UsageError
from medbench.plugins.host import PluginHost

FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TINY = [
    "--dataset", "phantom2d", "--set", "dataset.phantom2d.n_samples=200",
    "--set", "dataset.phantom2d.image_size=16", "--model", "smallcnn", "--defense", "none",
]  # fmt: skip
NEVER_RUNS = ["--n-eval", "100000"]
"""Larger than the tiny test split: a run that gets past every other check still ends in exit 2
before anything is trained or recorded, so that fuzzing the CLI stays fast."""


def run_cli(args: list[str]) -> tuple[int, str, str]:
    """``medbench ARGS`` in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(args)
        except SystemExit as done:
            code = done.code
        else:  # pragma: no cover - main always exits
            code = 0
    return (code if isinstance(code, int) else 1), out.getvalue(), err.getvalue()


def assert_usage_error(args: list[str], fragment: str = "") -> str:
    """Run ``medbench run ARGS``; check exit code 2, one line on stderr, no MLflow store created."""
    with tempfile.TemporaryDirectory() as directory:
        store = Path(directory) / "mlflow.db"
        code, _, err = run_cli(["run", *args, "--tracking-uri", f"sqlite:///{store}"])
        assert code == 2, err
        assert len(err.strip().splitlines()) == 1, err
        assert err.startswith("medbench: error: "), err
        assert "Traceback" not in err
        assert fragment in err, err
        assert not store.exists(), "nothing may be recorded"
    return err


def _valid_budgets(values: list[Any]) -> None:
    assert values, "a parsed budget list is never empty"
    for value in values:
        number = value.value if isinstance(value, UnitBudget) else value
        assert isinstance(number, float) and math.isfinite(number) and number >= 0, value
        if isinstance(value, float):
            assert isinstance(format_budget(value), str)


# --------------------------------------------------------------------------- budgets


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (10**400, "must be finite"),  # was a raw OverflowError (an int beyond the float range)
        (-(10**400), "must be finite"),
        ("9" * 400, "must be finite"),
        ("1e309", "must be finite"),
        ("1/1e-320", "must be finite"),
        ("0/0", "division by zero"),
        ("1/2/3", "expected a number"),
        ("1//2", "expected a number"),
        ("--", "expected a number"),
        ("\x00", "expected a number"),
        ("🤖", "expected a number"),
        ("∞", "expected a number"),
        ("8/255\n2/255", "expected a number"),
        ("1e400HU", "must be finite"),
        (None, "malformed budget list None"),  # YAML `eps: null`: was a raw TypeError
        (datetime.date(2020, 1, 1), "malformed budget list"),  # YAML `eps: 2020-01-01`
        (b"hello", "malformed budget list"),  # YAML !!binary: was five silent budgets 104, 101, ...
        ({"a": 1}, "malformed budget list"),
        ({1, 2}, "malformed budget list"),
        ([[1, 2]], "malformed budget '[1, 2]'"),
        ([], "empty budget list"),
        ([" "], "empty entry"),
    ],
)
def test_malformed_budgets_are_usage_errors(value: Any, fragment: str) -> None:
    with pytest.raises(UsageError, match=r"^[^\n]*$") as error:
        parse_budget_list(value)
    assert fragment in str(error.value)
    assert len(str(error.value)) < 200, "long values are shortened in the message"


def test_numbers_are_not_mistaken_for_unit_budgets() -> None:
    """``1e3`` is a number, not 1 in the unit ``e3`` (was ``UnitBudget(1.0, 'e3')``)."""
    assert parse_budget_list("1e3,2E5,1e308") == [1000.0, 200000.0, 1e308]
    assert parse_budget_or_unit("1e5HU") == UnitBudget(100000.0, "HU")
    assert parse_budget("-0") == 0.0 and math.copysign(1, parse_budget("-0")) == 1
    assert format_budget(1e308) == "1e+308", "was a raw OverflowError (1e308 * 255 is inf)"
    assert format_budget(1.7e308) == "1.7e+308"


budget_text = st.text(alphabet="0123456789./eE+-, HUmx\t٣８∞nai", max_size=12) | st.text(max_size=12)


@FUZZ
@given(budget_text)
def test_any_budget_text_parses_or_is_a_usage_error(text: str) -> None:
    try:
        values = parse_budget_list(text)
    except UsageError as error:
        assert "\n" not in str(error)
        return
    _valid_budgets(values)


yaml_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**500)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=10)
    | st.binary(max_size=6)
    | st.dates()
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=6) | st.integers(), children, max_size=3)
    ),
    max_leaves=12,
)


@FUZZ
@given(yaml_values)
def test_any_yaml_value_of_a_budget_list_parses_or_is_a_usage_error(value: Any) -> None:
    try:
        values = parse_budget_list(value)
    except UsageError as error:
        assert "\n" not in str(error)
        return
    _valid_budgets(values)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--eps", "9" * 400], "must be finite"),
        (["--eps", "1e309"], "must be finite"),
        (["--eps", ""], "empty entry"),
        (["--eps", ","], "empty entry"),
        (["--eps", "🤖"], "malformed budget"),
        (["--eps", "8/255\n2/255"], "malformed budget"),
        (["--eps", "0x10"], "declares no intensity window"),
        (["--budget", "=1"], "empty name"),
        (["--budget", "eps==1"], "malformed budget '=1'"),
        (["--budget", "sigma=1e400"], "must be finite"),
        (["--budget", "fgsm=5HU"], "declares no intensity window"),
        (["--seed", str(2**64)], "--seed must be between 0 and"),  # was FAILED cells (torch overflow)
    ],
)
def test_hostile_budgets_on_the_command_line(args: list[str], fragment: str) -> None:
    assert_usage_error([*TINY, "--attack", "fgsm", "--epochs", "0", *args], fragment)


@FUZZ
@given(st.lists(budget_text, min_size=1, max_size=2))
def test_any_eps_on_the_command_line_is_one_line_and_exit_code_2(texts: list[str]) -> None:
    eps = [arg for text in texts for arg in ("--eps", text)]
    assert_usage_error([*TINY, "--attack", "fgsm,gn", *eps, *NEVER_RUNS])


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_a_huge_but_finite_eps_is_a_usage_error_that_records_nothing(tmp_path: Path) -> None:
    """``--eps 1e308`` is above 1 on the [0, 1] intensity scale: one line, exit 2, no run (the
    budget's text does not overflow format_budget either)."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["run", *TINY, "--attack", "fgsm,gn", "--eps", "1e308", "--epochs", "0", "--n-eval", "8"]
    code, out, err = run_cli([*args, "--tracking-uri", uri, "--json"])
    assert code == 2 and out == "" and "Traceback" not in err, err
    assert "is above 1 on the [0, 1] intensity scale" in err and len(err.strip().splitlines()) == 1
    client = MlflowClient(tracking_uri=uri)
    assert all(not client.search_runs([e.experiment_id]) for e in client.search_experiments())


# --------------------------------------------------------------------------- spec files

BAD_VALUES: list[Any] = [
    None, True, 0, -1, 10**400, 1.5, float("nan"), float("inf"), "", " ", [], [None], [[]], {}, {"a": 1},
    b"\x00\xff", datetime.date(2020, 1, 1),
]  # fmt: skip


@pytest.mark.parametrize("key", sorted(_SPEC_KEYS))
def test_wrong_types_for_every_spec_key(key: str) -> None:
    """Every key with every kind of wrong value: a one-line UsageError naming the source, or a
    value of the documented type (never a raw TypeError, OverflowError or AttributeError)."""
    for value in [*BAD_VALUES, {None: 1}, {1: [1]}, {"epochs": 10**400}, {"attack": {"pgd": None}}]:
        try:
            spec = spec_from_mapping({key: value}, "hostile.yaml")
        except UsageError as error:
            assert str(error).startswith("hostile.yaml: ") and "\n" not in str(error), (key, value)
            assert len(str(error)) < 500, (key, value)
            continue
        _check_spec_types(spec)


def _check_spec_types(spec: RunSpec) -> None:
    assert isinstance(spec.name, str) and spec.name
    assert isinstance(spec.dataset, str) and spec.dataset
    for names in (spec.models, spec.defenses, spec.attacks):
        assert names and all(isinstance(name, str) and name for name in names)
    assert spec.weights is None or (isinstance(spec.weights, str) and spec.weights.strip())
    assert spec.data_dir is None or (isinstance(spec.data_dir, Path) and str(spec.data_dir) != ".")
    assert isinstance(spec.seed, int) and 0 <= spec.seed < 2**63
    for values in spec.budgets.values():
        _valid_budgets(values)


_SPEC_DIR = tempfile.TemporaryDirectory(prefix="medbench-hostile-")
"""Spec files of this module (hypothesis examples cannot use ``tmp_path``); removed at exit."""


def _spec_file(text: str | bytes) -> Path:
    directory = Path(tempfile.mkdtemp(dir=_SPEC_DIR.name))
    path = directory / "spec.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@FUZZ
@given(st.sampled_from(sorted(_SPEC_KEYS)), yaml_values)
def test_any_yaml_value_of_any_spec_key_loads_or_is_a_usage_error(key: str, value: Any) -> None:
    path = _spec_file(yaml.safe_dump({key: value}))
    try:
        spec = load_spec_file(path)
    except UsageError as error:
        assert "\n" not in str(error)
        return
    _check_spec_types(spec)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "the spec is empty"),  # was the default matrix, run as if it had been asked for
        (b"# only a comment\n", "the spec is empty"),
        (b"~\n", "the spec is empty"),
        (bytes(range(256)), "not valid YAML"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not valid YAML"),
        ("name: x\n".encode("utf-16"), "not valid YAML"),
        (b"name: a\x00b\n", "not valid YAML"),
        (b"42\n", "a spec must be a YAML mapping, got int"),
        (b"just a string\n", "a spec must be a YAML mapping, got str"),
        (b"name: a\n---\nname: b\n", "not valid YAML"),
        (b"? [a, b]\n: 1\n", "not valid YAML"),
        (b"1: 2\n", "unknown spec key '1'"),
        (b"null: 2\n", "unknown spec key 'None'"),
        (b"name: !!binary aGVsbG8=\n", "'name' must be a non-empty string"),
        (b"models: !!set {a, b}\n", "'models' must be a non-empty list"),
        (b"name: 2001-12-14t21:59:43.10-05:00\n", "'name' must be a non-empty string"),
        (b"seed: " + b"9" * 400 + b"\n", "'seed' must be <= 9223372036854775807"),
        (b"seed: 18446744073709551616\n", "'seed' must be <="),  # was FAILED cells (torch overflow)
        (b"budgets: {eps: null}\n", "malformed budget list None"),
        (b"budgets: {eps: 2020-01-01}\n", "malformed budget list"),
        (b"budgets: {eps: [" + b"9" * 400 + b"]}\n", "must be finite"),  # was a raw OverflowError
        (b"training: {lr: " + b"9" * 400 + b"}\n", "lr expects a number"),  # was a raw OverflowError
        (b"training: {epochs: " + b"9" * 400 + b"}\n", "epochs must be between"),  # ditto
        (b"training: {null: 1}\n", "unknown setting 'None'"),  # was a raw AttributeError
        (b"data_dir: ''\n", "'data_dir' must be a path"),  # was the current directory
        (b"data_dir: [a, b]\n", "'data_dir' must be a path"),  # was the folder "['a', 'b']"
        (b"weights: {a: 1}\n", "'weights' must be a path"),
        (b"models: &a [*a]\n", "contains itself through a YAML alias"),
        (b"models: " + b"[" * 20000 + b"]" * 20000 + b"\n", "nested too deeply"),  # RecursionError
        (b"models: " + b"{a: " * 20000 + b"1" + b"}" * 20000 + b"\n", "nested too deeply"),
    ],
)
def test_hostile_spec_files(content: bytes, fragment: str) -> None:
    path = _spec_file(content)
    with pytest.raises(UsageError) as error:
        load_spec_file(path)
    message = str(error.value)
    assert message.startswith(f"{path}: ") and "\n" not in message and len(message) < 500, message
    assert fragment in message


def test_huge_plugin_settings_in_a_spec_file() -> None:
    """Plugin settings are checked when the matrix is planned (was a raw OverflowError)."""
    path = _spec_file(
        "attacks: [pgd]\nsettings: {attack: {pgd: {max_iter: "
        + "9" * 400
        + ", step_ratio: "
        + "9" * 400
        + "}}}\n"
    )
    assert_usage_error(["--spec", str(path), *TINY, "--epochs", "0"], "pgd")


def test_five_hu_in_spec_budgets_on_a_dataset_without_a_window() -> None:
    path = _spec_file("dataset: phantom2d\nattacks: [fgsm]\nbudgets: {eps: [5HU]}\n")
    assert_usage_error(["--spec", str(path), *TINY[:6], "--epochs", "0"], "declares no intensity window")


def test_a_spec_file_and_its_merge_keys_within_the_limit_still_load() -> None:
    path = _spec_file(
        "name: anchors\nbudgets:\n  eps: &grid [1/255, 2/255]\n  sigma: *grid\n"
        "settings:\n  attack:\n    pgd: &pgd {max_iter: 3}\n    bim: {<<: *pgd}\n"
    )
    spec = load_spec_file(path)
    assert spec.budgets == {"eps": [1 / 255, 2 / 255], "sigma": [1 / 255, 2 / 255]}
    assert spec.plugin_settings("attack", "bim") == {"max_iter": 3}


BOMB_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from medbench.errors import UsageError
    from medbench.config.spec import load_spec_file

    levels = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        levels.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    anchors = "\\n".join("      " + line for line in levels)
    for where in ["models", "name", "description", "data_dir", "weights", "budgets", "training",
                  "settings"]:
        text = "settings:\\n  attack:\\n    pgd:\\n" + anchors + "\\n"
        if where == "settings":
            text = "settings:\\n  attack:\\n    pgd:\\n" + anchors + "\\n      max_iter: *i\\n"
        elif where == "budgets":
            text += "budgets: {eps: *i}\\n"
        elif where == "training":
            text += "training: {epochs: *i}\\n"
        else:
            text += f"{where}: *i\\n"
        path = Path(sys.argv[1]) / f"{where}.yaml"
        path.write_text(text)
        started = time.perf_counter()
        try:
            load_spec_file(path)
        except UsageError as error:
            print(where, round(time.perf_counter() - started, 3), str(error).splitlines()[0])
        else:
            print(where, "LOADED")
    """
)


def test_a_billion_laughs_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    """A 1 kB spec whose aliases expand to 9**9 strings: refused before anything walks it (it
    hung in the error message's repr, in str() of data_dir and weights, and in validation)."""
    result = subprocess.run(
        [sys.executable, "-c", BOMB_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 8, result.stdout
    for line in lines:
        _where, seconds, message = line.split(" ", 2)
        assert float(seconds) < 2, line
        assert f"more than {MAX_SPEC_NODES} values once its YAML aliases are expanded" in message, line


def test_an_alias_bomb_through_the_cli_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    levels = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        levels.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    spec = tmp_path / "bomb.yaml"
    spec.write_text(
        "settings:\n  attack:\n    pgd:\n" + "\n".join("      " + line for line in levels) + "\nmodels: *i\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "medbench", "run", "--spec", str(spec), "--tracking-uri",
         f"sqlite:///{tmp_path / 'mlflow.db'}"],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "YAML aliases" in result.stderr
    assert not (tmp_path / "mlflow.db").exists()


# --------------------------------------------------------------------------- --set values


def _settings_fields() -> list[tuple[str, str, str]]:
    host = PluginHost().load()
    found = []
    for kind, table in (("attack", "attacks"), ("defense", "defenses"), ("dataset", "datasets"),
                        ("model", "models")):  # fmt: skip
        for item in host.registries.all()[table]:
            if dataclasses.is_dataclass(item.Settings):
                found.extend((kind, item.name, f.name) for f in dataclasses.fields(item.Settings))
    return found


SETTINGS_FIELDS = _settings_fields()


@FUZZ
@given(st.sampled_from(SETTINGS_FIELDS), st.text(max_size=12) | yaml_values)
def test_any_value_of_any_plugin_setting_is_accepted_or_a_usage_error(
    target: tuple[str, str, str], value: Any
) -> None:
    """What ``--set kind.name.key=VALUE`` (a string) or a spec's ``settings`` (any YAML value)
    hand to every built-in plugin: configured, or a one-line UsageError (``unetr``'s
    ``num_heads=0`` raised a raw ZeroDivisionError from its validate())."""
    kind, name, key = target
    plugin = getattr(PluginHost().load().registries, f"{kind}s").get(name)
    try:
        plugin.configured({key: value})
    except UsageError as error:
        assert "\n" not in str(error) and len(str(error)) < 1000
        return


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--set", "attack.pgd.max_iter=1e400"], "max_iter expects an integer"),
        (["--set", f"attack.pgd.max_iter={10**400}"], "max_iter must be between"),
        (["--set", "attack.pgd.max_iter=1e300"], "max_iter must be between"),  # was a 10**300 loop
        (["--set", "attack.pgd.eps_step=nan"], "eps_step expects a number"),
        (["--set", "dataset.phantom2d.n_samples=1000000000"], "n_samples × image_size²"),  # was OOM
        (["--set", "attack.pgd.max_iter=3", "--set", "attack.pgd.max_iter"], "malformed --set"),
        (["--set", "attack..max_iter=3"], "malformed --set"),
        (["--set", "attack.pgd.max_iter.x=3"], "malformed --set"),
    ],
)
def test_hostile_set_values_on_the_command_line(args: list[str], fragment: str) -> None:
    assert_usage_error([*TINY, "--attack", "pgd", "--epochs", "0", *args], fragment)


def test_a_plugin_validate_that_divides_by_zero_is_a_usage_error() -> None:
    assert_usage_error(
        ["--dataset", "phantom3d", "--model", "unetr-tiny", "--set", "model.unetr-tiny.num_heads=0"],
        "model 'unetr-tiny': invalid settings (ZeroDivisionError",
    )


set_targets = st.sampled_from(
    ["attack.pgd.max_iter", "attack.pgd.eps_step", "attack.pgd.step_ratio", "attack.pgd.num_random_init",
     "model.smallcnn.width", "model.smallcnn.dropout", "defense.none.epochs", "attack.gn.clip"]
)  # fmt: skip


@FUZZ
@given(st.lists(st.tuples(set_targets, st.text(max_size=10)), min_size=1, max_size=3))
def test_any_set_on_the_command_line_is_one_line_and_exit_code_2(pairs: list[tuple[str, str]]) -> None:
    assignments = [arg for target, value in pairs for arg in ("--set", f"{target}={value}")]
    assert_usage_error([*TINY, "--attack", "pgd,gn,fgsm", *assignments, *NEVER_RUNS])


def test_a_misspelt_budget_name_in_a_spec_is_an_error() -> None:
    path = _spec_file("attacks: [fgsm]\nbudgets: {epz: [1/255]}\n")
    assert_usage_error(["--spec", str(path), *TINY, *NEVER_RUNS], "unknown attack or budget name 'epz'")
