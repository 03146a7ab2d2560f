"""The base of every plugin: a name, a description and settings; the task vocabulary."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from medbench.config.settings import NoSettings, build_settings, settings_as_dict

if TYPE_CHECKING:
    pass


Task = Literal["classification", "segmentation"]
ThreatModel = Literal["linf", "l2", "l2-minimal", "noise", "frequency"]
"""``linf`` / ``l2``: the budget bounds the perturbation's norm (the harness checks it).
``l2-minimal``: a minimal-perturbation attack (C&W L2, DeepFool): the budget is a margin, not
a bound, and the achieved L2 is the result (``l2_mean``). ``noise`` / ``frequency``: the budget
is a noise level or a quantisation step. All are checked to stay in [0, 1]."""
DefenseKind = Literal["training", "preprocessing", "wrapper"]

CLASSIFICATION: frozenset[str] = frozenset({"classification"})
SEGMENTATION: frozenset[str] = frozenset({"segmentation"})
ALL_TASKS: frozenset[str] = CLASSIFICATION | SEGMENTATION


class Plugin:
    """Common behaviour of every registered object: a name, a description, settings."""

    name: ClassVar[str]
    """Unique name users type on the command line (lowercase, dashes)."""
    description: ClassVar[str] = ""
    """One line shown by ``medbench list``."""
    Settings: ClassVar[type] = NoSettings
    """Dataclass of tunable parameters; every field needs a default."""

    def __init__(self, settings: Any | None = None) -> None:
        self.settings = settings if settings is not None else self.Settings()

    def configured(self, overrides: Mapping[str, Any] | None = None) -> Any:
        """Return a copy of this plugin object with ``overrides`` applied to its settings.

        Raises:
            UsageError: On an unknown setting or a value of the wrong type.
        """
        owner = f"{self.kind_label} {self.name!r}"
        settings = build_settings(type(self.settings), _merge(self.settings, overrides or {}), owner)
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.settings = settings
        return clone

    @property
    def kind_label(self) -> str:
        return "plugin"

    def settings_dict(self) -> dict[str, Any]:
        """The current settings as a plain dict (logged as MLflow params)."""
        return settings_as_dict(self.settings)


def _merge(settings: Any, overrides: Mapping[str, Any]) -> dict[str, Any]:
    current = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
    changed = {k: v for k, v in current.items() if v != _default_of(type(settings), k)}
    return {**changed, **overrides}


def _default_of(settings_cls: type, key: str) -> Any:
    for f in dataclasses.fields(settings_cls):
        if f.name == key:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
    return dataclasses.MISSING
