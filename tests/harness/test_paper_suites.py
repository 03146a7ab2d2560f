"""The papers' suites load, resolve every name and variant, and plan the matrices the issue asks for."""

from __future__ import annotations

import pytest
import torch

from medbench.config.spec import available_suites, load_suite
from medbench.engine.planning import plan_matrix
from medbench.plugins.host import PluginHost

SMALL_DATA = [("dataset", "phantom2d", "n_samples", "200"), ("dataset", "phantom2d", "image_size", "32")]


def _plan(name: str):  # type: ignore[no-untyped-def]
    spec = load_suite(name)
    spec.n_eval = None
    return plan_matrix(spec, PluginHost().load(), torch.device("cpu"), assignments=SMALL_DATA)


def test_the_paper_suites_are_installed() -> None:
    assert {"smoke", "domain-assimilation", "denoising-cnn", "colorization"} <= set(available_suites())


def test_domain_assimilation_suite() -> None:
    plan = _plan("domain-assimilation")
    assert list(plan.models) == ["resnet18", "resnet50", "densenet121"]
    assert list(plan.defenses) == ["none", "tc", "tc-glcm"]
    assert list(plan.attacks) == ["fgsm", "bim", "mifgsm", "pgd"]
    for name in plan.budgets:
        assert [round(b * 255, 6) for b in plan.budget_values(name)] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert plan.defenses["tc-glcm"][0].settings.alpha == pytest.approx(0.98)
    assert len(plan.cells) == 3 * 3 * 4 * 8


def test_denoising_cnn_suite() -> None:
    plan = _plan("denoising-cnn")
    assert list(plan.models) == ["resnet18", "vgg16"]
    chains = plan.defenses
    assert {"none", "dcnn", "reformer", "reformer+dcnn", "hgd", "hgd+dcnn"} <= set(chains)
    dcnn_rows = [chain[0].settings for name, chain in chains.items() if name.startswith("dcnn")]
    ablation = {(s.lambda_n, s.lambda_a) for s in dcnn_rows}
    assert ablation == {(1.0, 0.0), (0.0, 10.0), (1.0, 10.0)}
    assert [d.name for d in chains["hgd+dcnn"]] == ["hgd", "dcnn"]
    assert list(plan.attacks) == ["fgsm", "bim"]
    assert [round(b * 255) for b in plan.budget_values("bim")] == [4, 8]


def test_colorization_suite() -> None:
    plan = _plan("colorization")
    assert list(plan.models) == ["resnet18", "densenet121"]
    stages = {(c[0].name, c[0].settings.stage) for n, c in plan.defenses.items() if n != "none"}
    assert stages == {
        (f"colorize-{module}", stage)
        for module in ("deconv", "pixelshuffle", "coloru")
        for stage in ("color-module", "all", "last-layer")
    }


def test_threat_models_suite_plans_the_issue_comparison() -> None:
    plan = _plan("threat-models")
    assert list(plan.defenses) == ["none", "at-pgd"]
    assert list(plan.attacks) == ["pgd", "autoattack", "square"]
    assert all(plan.budget_values(name) == [2 / 255, 8 / 255] for name in plan.budgets)
    assert plan.surrogate is None and len(plan.cells) == 2 * 3 * 2
    smoke = load_suite("smoke")
    assert load_suite("threat-models").training == smoke.training, "reuses the smoke suite's trained models"
