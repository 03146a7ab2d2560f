"""Plugin settings: dataclasses with documented defaults, filled from suites and the CLI.

Every attack, defense, dataset and model declares a ``Settings`` dataclass. Values come
from, in increasing priority: the dataclass defaults, the suite YAML, ``--spec`` files
and ``--set kind.name.key=value`` on the command line. Unknown keys are a
:class:`~medbench.errors.UsageError` with a did-you-mean.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from medbench.config.budgets import parse_budget, shown
from medbench.errors import UsageError, unknown_name_message


@dataclasses.dataclass(frozen=True)
class NoSettings:
    """Settings of a plugin that has none."""


SettingsT = TypeVar("SettingsT")

MAX_INTEGER = 2**63 - 1
"""The largest integer setting: what fits the 64-bit integers of torch and numpy."""

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(owner: str, key: str, annotation: Any, value: Any) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:
        non_none = [arg for arg in args if arg is not type(None)]
        is_null = value is None or (isinstance(value, str) and value.lower() in {"none", "null"})
        if is_null and type(None) in args:
            return None
        errors = []
        for arg in non_none:
            try:
                return _coerce(owner, key, arg, value)
            except UsageError as error:
                errors.append(str(error))
        raise UsageError(errors[0] if errors else f"{owner}: bad value {shown(value)} for {key!r}")
    if origin is typing.Literal:
        if value not in args:
            choices = ", ".join(map(repr, args))
            raise UsageError(f"{owner}: {key} must be one of {choices}, got {shown(value)}")
        return value
    if origin in (tuple, list):
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise UsageError(f"{owner}: {key} expects a list, got {shown(value)}")
        item_type = args[0] if args else Any
        coerced = [_coerce(owner, key, item_type, item) for item in items]
        return tuple(coerced) if origin is tuple else coerced
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise UsageError(f"{owner}: {key} expects true or false, got {shown(value)}")
    if annotation is int:
        return _integer(owner, key, value)
    if annotation is float:
        try:
            return parse_budget(value) if isinstance(value, str) else _finite_float(value)
        except (UsageError, TypeError, ValueError):
            # negative floats are legitimate settings (unlike budgets): try once more plainly
            try:
                return _finite_float(value)
            except (TypeError, ValueError):
                raise UsageError(f"{owner}: {key} expects a number, got {shown(value)}") from None
    if annotation is str:
        if isinstance(value, (dict, list)):
            raise UsageError(f"{owner}: {key} expects a string, got {shown(value)}")
        return str(value)
    return value


def _integer(owner: str, key: str, value: Any) -> int:
    """An integer setting: an int, or a number or string with an integral value (``"20"``,
    ``"1e3"``), within the 64-bit range that torch and numpy take."""
    if isinstance(value, bool):
        raise UsageError(f"{owner}: {key} expects an integer, got {value!r}")
    result: int | None = value if isinstance(value, int) else None
    if result is None and isinstance(value, str):
        with contextlib.suppress(ValueError):
            result = int(value.strip())
    if result is None:
        try:
            as_float = float(value)
        except (TypeError, ValueError, OverflowError):
            raise UsageError(f"{owner}: {key} expects an integer, got {shown(value)}") from None
        if not as_float.is_integer():
            raise UsageError(f"{owner}: {key} expects an integer, got {shown(value)}")
        result = int(as_float)
    if not -MAX_INTEGER <= result <= MAX_INTEGER:
        raise UsageError(
            f"{owner}: {key} must be between {-MAX_INTEGER} and {MAX_INTEGER}, got {shown(value)}"
        )
    return result


def _finite_float(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError("bool is not a number")
    try:
        result = float(value)
    except OverflowError:  # an integer beyond the float range (10**400)
        raise ValueError("not finite") from None
    if result != result or result in (float("inf"), float("-inf")):
        raise ValueError("not finite")
    return result


def build_settings(settings_cls: type[SettingsT], overrides: Mapping[str, Any], owner: str) -> SettingsT:
    """Instantiate ``settings_cls`` from ``overrides``, validating keys and coercing types.

    Args:
        settings_cls: A dataclass type whose fields all have defaults.
        overrides: Values to use instead of the defaults (strings are coerced).
        owner: Shown in error messages, e.g. ``"attack 'pgd'"``.

    Raises:
        UsageError: On an unknown key, a value of the wrong type, or values the dataclass's
            ``validate()`` refuses (with ``ValueError``, or by tripping over them with a
            ``TypeError`` or ``ArithmeticError``).
    """
    if not dataclasses.is_dataclass(settings_cls):
        raise TypeError(f"{owner}: Settings must be a dataclass")
    hints = typing.get_type_hints(settings_cls)
    fields = {field.name: field for field in dataclasses.fields(settings_cls)}
    values: dict[str, Any] = {}
    for key, value in overrides.items():
        normalised = str(key).replace("-", "_")
        if normalised not in fields:
            raise UsageError(f"{owner}: {unknown_name_message('setting', str(key), fields)}")
        values[normalised] = _coerce(owner, normalised, hints[normalised], value)
    try:
        instance = settings_cls(**values)
        validate = getattr(instance, "validate", None)
        if callable(validate):
            validate()
    except ValueError as error:
        raise UsageError(f"{owner}: {error}") from None
    except (TypeError, ArithmeticError) as error:  # a validate() that trips over a value (x % 0)
        raise UsageError(f"{owner}: invalid settings ({type(error).__name__}: {error})") from None
    return instance


def settings_as_dict(settings: Any) -> dict[str, Any]:
    """Return the settings as a plain dict (empty for :class:`NoSettings`)."""
    if settings is None:
        return {}
    return dataclasses.asdict(settings)
