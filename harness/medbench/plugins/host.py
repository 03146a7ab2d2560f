"""Plugin discovery and loading: entry points → pluggy → registries.

Every entry point of the ``medbench`` group is loaded inside its own guard. A plugin that
fails to import, implements a hook that no hook specification declares (a misspelt
``register_attack``: pluggy's ``check_pending``), or whose registration hook raises, is
recorded as ``failed`` with the error and skipped; the others keep working
(``--strict-plugins`` turns such a failure into an error). Built-in plugins come through the
same entry-point group as third-party ones.

Environment variables (like pytest's):

* ``MEDBENCH_DISABLE_PLUGIN_AUTOLOAD=1``: load only the built-in plugins (those shipped in
  the ``medbench`` distribution); third-party entry points are listed as ``disabled``.
* ``MEDBENCH_DISABLE_PLUGINS=name,...``: skip these entry points (built-in or not).
* ``MEDBENCH_PLUGINS_ALLOW=name,...``: load only these entry points (built-in or not), for
  shared servers where not every installed package should run inside medbench; the others
  are listed as ``disabled`` and never imported.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Literal

import pluggy

from medbench import PROJECT_NAME
from medbench.errors import DuplicateNameError, PluginLoadError, equally_close
from medbench.plugins import hookspecs
from medbench.plugins.registry import Registries

ENTRY_POINT_GROUP = PROJECT_NAME
BUILTIN_DISTRIBUTION = "medbench"
ENV_DISABLE_AUTOLOAD = "MEDBENCH_DISABLE_PLUGIN_AUTOLOAD"
ENV_DISABLE_PLUGINS = "MEDBENCH_DISABLE_PLUGINS"
ENV_ALLOW_PLUGINS = "MEDBENCH_PLUGINS_ALLOW"

_REGISTRATION_HOOKS = {
    "register_attacks": "attacks",
    "register_defenses": "defenses",
    "register_datasets": "datasets",
    "register_models": "models",
    "register_metrics": "metrics",
}

Status = Literal["loaded", "failed", "disabled"]


@dataclass
class PluginInfo:
    """What ``medbench plugins`` shows for one plugin."""

    name: str
    version: str
    source: str
    status: Status
    builtin: bool
    error: str | None = None
    location: str | None = None
    provides: dict[str, list[str]] = field(default_factory=dict)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in {"", "0", "false", "no", "off"}


def _env_list(name: str) -> set[str]:
    return {item.strip() for item in os.environ.get(name, "").split(",") if item.strip()}


def _describe_error(error: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(error), error)).strip().splitlines()[-1]


class PluginHost:
    """Loads plugins and holds the registries and the pluggy manager.

    Args:
        autoload: Load third-party entry points; default from ``MEDBENCH_DISABLE_PLUGIN_AUTOLOAD``.
        disabled: Entry-point names to skip; default from ``MEDBENCH_DISABLE_PLUGINS``.
        allowed: If given, the only entry-point names to load; default from
            ``MEDBENCH_PLUGINS_ALLOW`` (unset or empty: no restriction).
        strict: Raise :class:`PluginLoadError` when any plugin fails to load.
        entry_point_source: Returns the entry points to consider (tests inject their own).
    """

    def __init__(
        self,
        *,
        autoload: bool | None = None,
        disabled: Iterable[str] | None = None,
        allowed: Iterable[str] | None = None,
        strict: bool = False,
        entry_point_source: Callable[[], Iterable[EntryPoint]] | None = None,
    ) -> None:
        self.autoload = (not _env_flag(ENV_DISABLE_AUTOLOAD)) if autoload is None else autoload
        self.disabled = set(disabled) if disabled is not None else _env_list(ENV_DISABLE_PLUGINS)
        self.allowed = set(allowed) if allowed is not None else (_env_list(ENV_ALLOW_PLUGINS) or None)
        self.strict = strict
        self._entry_point_source = entry_point_source or (lambda: entry_points(group=ENTRY_POINT_GROUP))
        self.manager = pluggy.PluginManager(PROJECT_NAME)
        self.manager.add_hookspecs(hookspecs)
        self.registries = Registries()
        self.infos: list[PluginInfo] = []
        self.conflicts: list[str] = []
        self._loaded = False

    # ------------------------------------------------------------------ loading

    def load(self) -> PluginHost:
        """Discover, import and register every plugin (once)."""
        if self._loaded:
            return self
        self._loaded = True
        seen: set[tuple[str, str]] = set()
        for entry_point in sorted(self._entry_point_source(), key=_builtin_first):
            key = (entry_point.name, entry_point.value)
            if key in seen:  # the same distribution visible twice on sys.path
                continue
            seen.add(key)
            self._load_entry_point(entry_point)
        self._check_hook_names()
        self._register_all()
        return self

    def add_plugin(self, plugin: Any, name: str, *, version: str = "", source: str = "code") -> PluginInfo:
        """Register a plugin object directly (tests, notebooks) and run its registration hooks."""
        info = PluginInfo(name, version or getattr(plugin, "__version__", "unknown"), source, "loaded", False)
        self.infos.append(info)
        self.manager.register(plugin, name=name)
        self._check_hook_names()
        if info.status == "loaded":
            self._register_plugin(info, plugin)
        return info

    def _load_entry_point(self, entry_point: EntryPoint) -> None:
        dist = entry_point.dist
        dist_name = dist.name if dist is not None else "unknown"
        info = PluginInfo(
            name=entry_point.name,
            version=dist.version if dist is not None else "unknown",
            source=f"{dist_name} ({entry_point.value})",
            status="loaded",
            builtin=dist_name == BUILTIN_DISTRIBUTION,
        )
        self.infos.append(info)
        if entry_point.name in self.disabled:
            info.status, info.error = "disabled", f"disabled by {ENV_DISABLE_PLUGINS}"
            return
        if self.allowed is not None and entry_point.name not in self.allowed:
            info.status, info.error = "disabled", f"not in {ENV_ALLOW_PLUGINS}"
            return
        if not self.autoload and not info.builtin:
            info.status, info.error = "disabled", f"third-party autoload off ({ENV_DISABLE_AUTOLOAD})"
            return
        try:
            plugin = entry_point.load()
            self.manager.register(plugin, name=entry_point.name)
        except (Exception, SystemExit) as error:  # a broken plugin must not take the others down
            info.status, info.error = "failed", _describe_error(error)
            return
        info.location = getattr(plugin, "__file__", None)

    def _check_hook_names(self) -> None:
        """Fail (and unregister) every plugin that implements a hook no specification declares.

        pluggy accepts such an implementation at registration and never calls it, so a
        misspelt ``register_attack`` would otherwise register nothing, silently.
        """
        while True:
            try:
                self.manager.check_pending()
            except pluggy.PluginValidationError as error:
                plugin, fallback = error.plugin, str(error)
            else:
                return
            name = self.manager.get_name(plugin)
            unknown = sorted(
                caller.name
                for caller in self.manager.get_hookcallers(plugin) or []
                if not caller.has_spec()
                and any(impl.plugin is plugin and not impl.optionalhook for impl in caller.get_hookimpls())
            )
            message = ", ".join(f"unknown hook {hook!r}{self._did_you_mean(hook)}" for hook in unknown)
            for info in self.infos:
                if info.name == name and info.status == "loaded":
                    info.status, info.error = "failed", message or fallback
            self.manager.unregister(plugin)

    def _did_you_mean(self, hook: str) -> str:
        known = [
            name
            for name, caller in vars(self.manager.hook).items()
            if not name.startswith("_") and caller.has_spec()
        ]
        close = equally_close(hook, known)
        return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""

    def _register_all(self) -> None:
        for info in self.infos:
            if info.status != "loaded":
                continue
            plugin = self.manager.get_plugin(info.name)
            if plugin is not None:
                self._register_plugin(info, plugin)

    def _register_plugin(self, info: PluginInfo, plugin: Any) -> None:
        for hook_name, table_name in _REGISTRATION_HOOKS.items():
            function = getattr(plugin, hook_name, None)
            if function is None or self.manager.parse_hookimpl_opts(plugin, hook_name) is None:
                continue
            table = self.registries.all()[table_name]

            def register(item: Any, _table: Any = table, _owner: str = info.name) -> None:
                _table.add(item, _owner)

            try:
                function(register=register)
            except DuplicateNameError as error:
                self.conflicts.append(str(error))
                info.status, info.error = "failed", str(error)
            except (Exception, SystemExit) as error:
                info.status, info.error = "failed", f"{hook_name}: {_describe_error(error)}"
            if info.status == "failed":
                for other in self.registries.all().values():
                    other.remove_owner(info.name)
                self.manager.unregister(plugin)
                return
        info.provides = {
            table_name: [n for n in table.names() if table.owner(n) == info.name]
            for table_name, table in self.registries.all().items()
        }

    def check(self) -> None:
        """Raise on name conflicts, and on any failed plugin in strict mode."""
        if self.conflicts:
            raise DuplicateNameError(self.conflicts[0])
        if self.strict:
            failed = [info for info in self.infos if info.status == "failed"]
            if failed:
                first = failed[0]
                raise PluginLoadError(f"plugin {first.name!r} failed to load: {first.error}")

    # ------------------------------------------------------------------ lifecycle hooks

    def call(self, hook_name: str, **kwargs: Any) -> list[str]:
        """Call a lifecycle hook on every plugin, each in its own guard.

        Returns:
            One message per implementation that raised (the others still ran).
        """
        caller = getattr(self.manager.hook, hook_name)
        problems = []
        for impl in caller.get_hookimpls():
            try:
                impl.function(**{name: kwargs[name] for name in impl.argnames})
            except (Exception, SystemExit) as error:
                problems.append(f"plugin {impl.plugin_name!r} {hook_name}: {_describe_error(error)}")
        return problems

    def add_commands(self, cli: Any) -> None:
        """Let plugins add CLI sub-commands (``register_commands``); failures are reported, not fatal."""
        for problem in self.call("register_commands", cli=cli):
            self.infos.append(PluginInfo("(commands)", "", "", "failed", False, problem))

    def failed(self) -> list[PluginInfo]:
        return [info for info in self.infos if info.status == "failed"]


def _builtin_first(entry_point: EntryPoint) -> tuple[int, str]:
    dist = entry_point.dist
    return (0 if dist is not None and dist.name == BUILTIN_DISTRIBUTION else 1, entry_point.name)


def load_plugins(*, strict: bool = False, check: bool = True) -> PluginHost:
    """Discover and load every plugin with the environment's settings.

    Args:
        strict: A plugin that fails to load is an error.
        check: Raise on name conflicts (and, when strict, failures); ``medbench plugins``
            passes False so that it can show them.
    """
    host = PluginHost(strict=strict).load()
    if check:
        host.check()
    return host
