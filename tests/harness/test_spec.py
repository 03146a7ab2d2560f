"""Suites, spec files, settings coercion and command-line overrides."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from medbench.config.settings import build_settings
from medbench.config.spec import (
    RunSpec,
    available_suites,
    load_spec_file,
    load_suite,
    parse_assignment,
    parse_budget_override,
    spec_from_mapping,
    with_overrides,
)
from medbench.errors import UsageError


def test_smoke_suite_is_the_documented_matrix() -> None:
    spec = load_suite("smoke")
    assert spec.dataset == "phantom2d"
    assert spec.models == ["smallcnn"]
    assert spec.defenses == ["none", "at-pgd"]
    assert spec.attacks == ["fgsm", "pgd", "gn"]
    assert spec.budgets == {"eps": [2 / 255, 8 / 255], "sigma": [2 / 255, 8 / 255]}
    assert "smoke" in available_suites()


def test_spec_rejects_unknown_keys_and_bad_types() -> None:
    with pytest.raises(UsageError, match="unknown spec key 'modles'; did you mean 'models'"):
        spec_from_mapping({"modles": ["smallcnn"]}, "x.yaml")
    with pytest.raises(UsageError, match="'models' must be a non-empty list"):
        spec_from_mapping({"models": []}, "x.yaml")
    with pytest.raises(UsageError, match="'seed' must be an integer"):
        spec_from_mapping({"seed": "zero"}, "x.yaml")
    with pytest.raises(UsageError, match="'n_eval' must be >= 1"):
        spec_from_mapping({"n_eval": 0}, "x.yaml")
    with pytest.raises(UsageError, match="'rank_by' must be one of accuracy, auc, dice or null, got 'f1'"):
        spec_from_mapping({"rank_by": "f1"}, "x.yaml")
    assert spec_from_mapping({"rank_by": "auc"}, "x.yaml").rank_by == "auc"
    with pytest.raises(UsageError, match="unknown setting 'epoch'; did you mean 'epochs'"):
        spec_from_mapping({"training": {"epoch": 3}}, "x.yaml")
    with pytest.raises(UsageError, match="unknown plugin kind 'attacks'; did you mean 'attack'"):
        spec_from_mapping({"settings": {"attacks": {}}}, "x.yaml")
    with pytest.raises(UsageError, match="a spec must be a YAML mapping"):
        spec_from_mapping([1, 2], "x.yaml")


def test_spec_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "matrix.yaml"
    path.write_text(
        "name: mine\nmodels: smallcnn,resnet18\nattacks: [pgd]\nbudgets: {pgd: [1/255, '4/255']}\n"
        "training: {epochs: 2, lr: 1e-4}\nsettings: {attack: {pgd: {max_iter: 3}}}\n",
        encoding="utf-8",
    )
    spec = load_spec_file(path)
    assert spec.name == "mine" and spec.models == ["smallcnn", "resnet18"]
    assert spec.budgets == {"pgd": [1 / 255, 4 / 255]}
    assert spec.training.epochs == 2 and spec.training.lr == pytest.approx(1e-4)
    assert spec.plugin_settings("attack", "pgd") == {"max_iter": 3}


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo pwned']\n", encoding="utf-8")
    with pytest.raises(UsageError, match="not valid YAML"):
        load_spec_file(path)


def test_command_line_overrides() -> None:
    spec = with_overrides(
        RunSpec(), {"models": ("smallcnn,resnet18", "vgg16"), "epochs": 3, "seed": 7, "n_eval": None}
    )
    assert spec.models == ["smallcnn", "resnet18", "vgg16"]
    assert spec.training.epochs == 3 and spec.seed == 7 and spec.n_eval is None
    assert parse_assignment("attack.pgd.max_iter=20") == ("attack", "pgd", "max_iter", "20")
    assert parse_budget_override("q_max=20,30") == ("q_max", [20.0, 30.0])
    with pytest.raises(UsageError, match="malformed --set"):
        parse_assignment("attack.pgd=3")


@dataclass(frozen=True)
class _Example:
    steps: int = 10
    eps: float = 8 / 255
    flag: bool = False
    name: str = "x"
    optional: int | None = None
    sizes: tuple[int, ...] = (1, 2)

    def validate(self) -> None:
        if self.steps < 1:
            raise ValueError("steps must be >= 1")


def test_settings_are_coerced_and_validated() -> None:
    settings = build_settings(
        _Example, {"steps": "3", "eps": "4/255", "flag": "true", "optional": "none", "sizes": "3,4"}, "test"
    )
    assert settings == _Example(steps=3, eps=4 / 255, flag=True, optional=None, sizes=(3, 4))
    assert build_settings(_Example, {"eps": -0.5}, "test").eps == -0.5
    with pytest.raises(UsageError, match="steps must be >= 1"):
        build_settings(_Example, {"steps": 0}, "test")
    with pytest.raises(UsageError, match="expects an integer"):
        build_settings(_Example, {"steps": 2.5}, "test")
    with pytest.raises(UsageError, match="expects true or false"):
        build_settings(_Example, {"flag": "maybe"}, "test")
    with pytest.raises(UsageError, match="did you mean 'steps'"):
        build_settings(_Example, {"step": 1}, "test")
