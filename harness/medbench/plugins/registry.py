"""Name → plugin-object tables, one per kind, filled by the registration hooks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from medbench.api import Attack, Dataset, Defense, Metric, Model, Plugin
from medbench.errors import DuplicateNameError, UnknownNameError

T = TypeVar("T", bound=Plugin)


class Registry(Generic[T]):
    """Objects of one kind (attacks, defenses, ...) by name, remembering who registered each."""

    def __init__(self, kind: str, base: type[Any]) -> None:
        self.kind = kind
        self.base = base
        self._items: dict[str, T] = {}
        self._owners: dict[str, str] = {}

    def add(self, item: T, owner: str) -> None:
        """Register ``item`` on behalf of plugin ``owner``.

        Raises:
            TypeError: ``item`` is not an instance of the kind's base class or has no name.
            DuplicateNameError: The name is taken; the message names both plugins.
        """
        if not isinstance(item, self.base):
            raise TypeError(
                f"plugin {owner!r} registered {item!r} as a {self.kind}, "
                f"but it is not an instance of medbench.api.{self.base.__name__}"
            )
        name = getattr(item, "name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"plugin {owner!r} registered a {self.kind} without a name")
        if name in self._items:
            raise DuplicateNameError(
                f"{self.kind} {name!r} is registered twice: by plugin {self._owners[name]!r} "
                f"and by plugin {owner!r}"
            )
        self._items[name] = item
        self._owners[name] = owner

    def get(self, name: str) -> T:
        """Return the object registered as ``name``; UnknownNameError with a did-you-mean otherwise."""
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self._items) from None

    def owner(self, name: str) -> str:
        """Name of the plugin that registered ``name``."""
        return self._owners[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[T]:
        return iter(self._items[name] for name in self.names())

    def __len__(self) -> int:
        return len(self._items)

    def remove_owner(self, owner: str) -> None:
        """Forget everything plugin ``owner`` registered (used when its registration failed half-way)."""
        for name in [n for n, o in self._owners.items() if o == owner]:
            del self._items[name]
            del self._owners[name]


@dataclass
class Registries:
    """All the tables the harness uses."""

    attacks: Registry[Attack] = field(default_factory=lambda: Registry("attack", Attack))
    defenses: Registry[Defense] = field(default_factory=lambda: Registry("defense", Defense))
    datasets: Registry[Dataset] = field(default_factory=lambda: Registry("dataset", Dataset))
    models: Registry[Model] = field(default_factory=lambda: Registry("model", Model))
    metrics: Registry[Metric] = field(default_factory=lambda: Registry("metric", Metric))

    def all(self) -> dict[str, Registry[Plugin]]:
        return {
            "attacks": self.attacks,  # type: ignore[dict-item]
            "defenses": self.defenses,  # type: ignore[dict-item]
            "datasets": self.datasets,  # type: ignore[dict-item]
            "models": self.models,  # type: ignore[dict-item]
            "metrics": self.metrics,  # type: ignore[dict-item]
        }
