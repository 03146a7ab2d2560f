"""Plugin discovery: built-ins through entry points, broken, duplicate, disabled and unknown plugins."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from medbench import hookimpl
from medbench.errors import DuplicateNameError, PluginLoadError, UnknownNameError
from medbench.plugins.host import PluginHost
from medbench_art.pgd import PGD


def _write_module(directory: Path, name: str, source: str) -> None:
    (directory / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")


def _write_distribution(site: Path, dist: str, entry_points: dict[str, str]) -> None:
    """A real (minimal) installed distribution: dist-info with METADATA and entry_points.txt."""
    info = site / f"{dist.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n", encoding="utf-8")
    lines = "\n".join(f"{name} = {value}" for name, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[medbench]\n{lines}\n", encoding="utf-8")


def test_builtin_plugins_are_found_through_entry_points() -> None:
    host = PluginHost().load()
    by_name = {info.name: info for info in host.infos}
    for name in ("art", "data", "models"):
        assert by_name[name].status == "loaded", by_name[name].error
        assert by_name[name].builtin
        assert by_name[name].source.startswith("medbench ")
    assert {"fgsm", "bim", "pgd", "mifgsm", "gn"} <= set(host.registries.attacks.names())
    assert {"none", "at-pgd"} <= set(host.registries.defenses.names())
    assert {"phantom2d", "imagefolder", "medmnist"} <= set(host.registries.datasets.names())
    assert {"smallcnn", "resnet18", "resnet50", "densenet121", "vgg16"} <= set(host.registries.models.names())
    assert host.registries.attacks.owner("pgd") == "art"


def test_broken_plugin_is_reported_and_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_module(tmp_path, "broken_plugin", "raise ImportError('missing dependency xyz')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    entry_points = [
        EntryPoint("art", "medbench_art", "medbench"),
        EntryPoint("broken", "broken_plugin", "medbench"),
    ]
    host = PluginHost(entry_point_source=lambda: entry_points).load()
    status = {info.name: (info.status, info.error) for info in host.infos}
    assert status["broken"][0] == "failed"
    assert "missing dependency xyz" in (status["broken"][1] or "")
    assert status["art"][0] == "loaded"
    assert "pgd" in host.registries.attacks
    host.check()  # not strict: no error
    with pytest.raises(PluginLoadError, match="broken"):
        PluginHost(strict=True, entry_point_source=lambda: entry_points).load().check()


def test_plugin_whose_registration_hook_raises_is_unregistered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_module(
        tmp_path,
        "half_plugin",
        """
        from medbench import hookimpl
        from medbench_art.fgsm import FGSM

        class Other(FGSM):
            name = "other-fgsm"

        @hookimpl
        def register_attacks(register):
            register(Other())
            raise RuntimeError("boom while registering")
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    host = PluginHost(entry_point_source=lambda: [EntryPoint("half", "half_plugin", "medbench")]).load()
    (info,) = host.infos
    assert info.status == "failed" and "boom while registering" in (info.error or "")
    assert "other-fgsm" not in host.registries.attacks


def test_duplicate_names_are_an_error_naming_both_plugins() -> None:
    class FirstPlugin:
        @hookimpl
        def register_attacks(self, register):  # type: ignore[no-untyped-def]
            register(PGD())

    host = PluginHost(entry_point_source=lambda: [EntryPoint("art", "medbench_art", "medbench")]).load()
    host.add_plugin(FirstPlugin(), "copycat")
    with pytest.raises(
        DuplicateNameError, match=r"'pgd' is registered twice: by plugin 'art' and by plugin 'copycat'"
    ):
        host.check()


def test_unknown_names_suggest_the_closest_one() -> None:
    host = PluginHost().load()
    with pytest.raises(UnknownNameError, match=r"unknown attack 'pdg'; did you mean 'pgd'\?"):
        host.registries.attacks.get("pdg")
    with pytest.raises(UnknownNameError, match="unknown defense 'zzzz'; known: "):
        host.registries.defenses.get("zzzz")


def test_registering_a_non_plugin_object_is_a_plugin_failure() -> None:
    class Wrong:
        @hookimpl
        def register_attacks(self, register):  # type: ignore[no-untyped-def]
            register(object())

    host = PluginHost(entry_point_source=lambda: []).load()
    info = host.add_plugin(Wrong(), "wrong")
    assert info.status == "failed"
    assert "medbench.api.Attack" in (info.error or "")


def test_misspelt_hook_is_a_plugin_failure_naming_the_hook(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Misspelt:
        @hookimpl
        def register_attack(self, register):  # type: ignore[no-untyped-def]
            register(PGD())

        @hookimpl
        def register_models(self, register):  # type: ignore[no-untyped-def]
            raise AssertionError("a failed plugin registers nothing")

    host = PluginHost(entry_point_source=lambda: []).load()
    info = host.add_plugin(Misspelt(), "typo")
    assert info.status == "failed"
    assert info.error == "unknown hook 'register_attack' (did you mean 'register_attacks'?)"
    assert host.manager.get_plugin("typo") is None
    assert "pgd" not in host.registries.attacks
    host.check()  # not strict: reported, not raised

    _write_module(
        tmp_path,
        "misspelt_plugin",
        """
        from medbench import hookimpl

        @hookimpl
        def register_attack(register):
            pass
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    entry_points = [
        EntryPoint("art", "medbench_art", "medbench"),
        EntryPoint("misspelt", "misspelt_plugin", "medbench"),
    ]
    loaded = PluginHost(entry_point_source=lambda: entry_points).load()
    status = {info.name: (info.status, info.error) for info in loaded.infos}
    assert status["misspelt"][0] == "failed" and "'register_attack'" in (status["misspelt"][1] or "")
    assert status["art"][0] == "loaded" and "pgd" in loaded.registries.attacks
    with pytest.raises(
        PluginLoadError,
        match=r"^plugin 'misspelt' failed to load: unknown hook 'register_attack' "
        r"\(did you mean 'register_attacks'\?\)$",
    ):
        PluginHost(strict=True, entry_point_source=lambda: entry_points).load().check()


def test_disable_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDBENCH_DISABLE_PLUGINS", "models")
    host = PluginHost().load()
    status = {info.name: info.status for info in host.infos}
    assert status["models"] == "disabled" and status["art"] == "loaded"
    assert "smallcnn" not in host.registries.models


def test_allow_list_loads_only_the_named_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_module(tmp_path, "stranger_plugin", "raise SystemExit('a stranger ran code at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    entry_points = [
        EntryPoint("art", "medbench_art", "medbench"),
        EntryPoint("data", "medbench_data", "medbench"),
        EntryPoint("stranger", "stranger_plugin", "medbench"),
    ]
    monkeypatch.setenv("MEDBENCH_PLUGINS_ALLOW", "art, data")
    host = PluginHost(entry_point_source=lambda: entry_points).load()
    status = {info.name: (info.status, info.error) for info in host.infos}
    assert status["stranger"] == ("disabled", "not in MEDBENCH_PLUGINS_ALLOW"), "never imported"
    assert status["art"][0] == status["data"][0] == "loaded"
    assert "pgd" in host.registries.attacks and "phantom2d" in host.registries.datasets
    host.check()
    monkeypatch.setenv("MEDBENCH_PLUGINS_ALLOW", "")
    unrestricted = PluginHost(entry_point_source=lambda: entry_points[:2]).load()
    assert all(info.status == "loaded" for info in unrestricted.infos), "empty: no restriction"


def _run_cli(args: list[str], site: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(site), "COLUMNS": "200", **env}
    return subprocess.run(
        [sys.executable, "-m", "medbench", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )


@pytest.mark.slow
def test_cli_reports_an_installed_broken_third_party_plugin(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    _write_module(site, "medbench_broken", "import this_module_does_not_exist\n")
    _write_distribution(site, "medbench-broken", {"broken": "medbench_broken"})

    listing = _run_cli(["plugins"], site)
    assert listing.returncode == 0, listing.stderr
    assert "broken" in listing.stdout and "failed" in listing.stdout
    assert "this_module_does_not_exist" in listing.stdout
    assert "medbench-broken" in listing.stdout

    working = _run_cli(["list", "attacks"], site)
    assert working.returncode == 0 and "pgd" in working.stdout

    strict = _run_cli(["--strict-plugins", "list", "attacks"], site)
    assert strict.returncode == 2
    assert "plugin 'broken' failed to load" in strict.stderr
    assert len(strict.stderr.strip().splitlines()) == 1

    no_autoload = _run_cli(["plugins"], site, MEDBENCH_DISABLE_PLUGIN_AUTOLOAD="1")
    assert "disabled" in no_autoload.stdout and "autoload" in no_autoload.stdout
