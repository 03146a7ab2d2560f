"""C&W, AutoAttack, APGD, Square, DeepFool, HopSkipJump: contracts and behaviour on trained tiny models."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.nn import functional as F
from torch.utils.data import TensorDataset

import medbench.testing
from medbench.api import Attack, AttackResult, DatasetBundle
from medbench.errors import CellError, UsageError
from medbench.plugins.host import PluginHost
from medbench.testing import check_attack, tiny_estimator
from medbench_art.apgd_ce import APGDCE
from medbench_art.apgd_dlr import APGDDLR
from medbench_art.autoattack import AutoAttack, SequentialAutoAttack, TopClassesTargetedAPGD
from medbench_art.cw_l2 import CWL2
from medbench_art.cw_linf import CWLinf
from medbench_art.deepfool import DeepFool
from medbench_art.hsj import HopSkipJump
from medbench_art.pgd import PGD
from medbench_art.square import Square

NEW_ATTACKS = ("cw-l2", "cw-linf", "autoattack", "apgd-ce", "apgd-dlr", "square", "deepfool", "hsj")
EPS = 0.04
"""An L∞ budget at which PGD breaks some but not all samples of the trained binary model."""
EPS3 = 0.03
"""The same for the three-class model."""
QUICK = {"autoattack": {"square_queries": 300}, "square": {"max_iter": 300}}
"""Fewer black-box queries where the contract checks do not need them."""


def _bands(classes: int, n: int = 96, size: int = 16, contrast: float = 0.08) -> DatasetBundle:
    """Class c has a slightly brighter c-th vertical band on noisy gray: learnable, not robust."""
    generator = torch.Generator().manual_seed(classes)
    labels = torch.arange(n) % classes
    images = 0.4 + 0.2 * torch.rand(n, 1, size, size, generator=generator)
    width = size // classes
    for index, label in enumerate(labels.tolist()):
        images[index, :, :, label * width : (label + 1) * width] += contrast
    split = TensorDataset(images.clamp(0, 1), labels)
    return DatasetBundle(
        train=split,
        val=split,
        test=split,
        class_names=tuple(f"band_{i}" for i in range(classes)),
        input_shape=(1, size, size),
        fingerprint=f"bands-{classes}-{n}-{size}",
    )


def _trained(classes: int) -> tuple[Any, DatasetBundle]:
    estimator, bundle = tiny_estimator(_bands(classes), seed=0)
    x, y = bundle.train.tensors  # type: ignore[attr-defined]
    optimizer = torch.optim.Adam(estimator.model.parameters(), lr=0.01)
    estimator.model.train()
    for _ in range(60):
        optimizer.zero_grad()
        F.cross_entropy(estimator.model((x - 0.5) / 0.25), y).backward()
        optimizer.step()
    estimator.model.eval()
    return estimator, bundle


@pytest.fixture(scope="module")
def binary() -> tuple[Any, DatasetBundle]:
    return _trained(2)


@pytest.fixture(scope="module")
def three_class() -> tuple[Any, DatasetBundle]:
    return _trained(3)


def _batch(trained: tuple[Any, DatasetBundle], n: int = 12) -> tuple[Any, torch.Tensor, torch.Tensor]:
    estimator, bundle = trained
    x, y = bundle.test.tensors  # type: ignore[attr-defined]
    return estimator, x[:n], y[:n]


def _accuracy(estimator: Any, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((torch.from_numpy(estimator.predict(x.numpy())).argmax(1) == y).float().mean())


def _adversarial(generated: torch.Tensor | AttackResult) -> torch.Tensor:
    return generated.x_adv if isinstance(generated, AttackResult) else generated


def _attack(name: str) -> Attack:
    return PluginHost().load().registries.attacks.get(name)


# --------------------------------------------------------------------------- contracts


@pytest.mark.parametrize("name", NEW_ATTACKS)
def test_registered_as_single_label_classification_attacks(name: str) -> None:
    attack = _attack(name)
    assert attack.tasks == frozenset({"classification"})
    assert attack.description and attack.default_budgets


@pytest.mark.parametrize("name", NEW_ATTACKS)
def test_contract_on_a_trained_model(
    name: str, binary: tuple[Any, DatasetBundle], three_class: tuple[Any, DatasetBundle], monkeypatch: Any
) -> None:
    """``check_attack`` (range, budget, device, reproducibility, zero budget) on a model the
    attacks can actually break; apgd-dlr on three classes, which its loss needs."""
    trained, eps = (three_class, EPS3) if name == "apgd-dlr" else (binary, EPS)
    monkeypatch.setattr(medbench.testing, "tiny_estimator", lambda *args, **kwargs: trained)
    attack = _attack(name).configured(QUICK.get(name, {}))
    budget = eps if attack.budget_name == "eps" else attack.default_budgets[-1]
    check_attack(attack, budget=budget, seed=3)


@pytest.mark.parametrize("name", NEW_ATTACKS)
def test_multilabel_targets_fail_with_one_clear_line(
    name: str, three_class: tuple[Any, DatasetBundle]
) -> None:
    estimator, x, _ = _batch(three_class, 4)
    multi_hot = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    with pytest.raises(CellError, match=rf"^attack '{name}' supports single-label classification only"):
        _attack(name).generate(estimator, x, multi_hot, EPS, seed=0)


def test_apgd_dlr_on_binary_data_says_why_and_what_to_use(binary: tuple[Any, DatasetBundle]) -> None:
    estimator, x, y = _batch(binary)
    with pytest.raises(CellError) as error:
        APGDDLR().generate(estimator, x, y, EPS, seed=0)
    message = str(error.value)
    assert "\n" not in message
    assert "needs at least 3 classes" in message and "has 2" in message and "apgd-ce" in message


def test_invalid_settings_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="max_norm"):
        CWL2().configured({"max_norm": -1.0})
    with pytest.raises(UsageError, match="version"):
        AutoAttack().configured({"version": "plus"})
    with pytest.raises(UsageError, match="norm"):
        HopSkipJump().configured({"norm": "l1"})
    with pytest.raises(UsageError, match="restarts"):
        APGDCE().configured({"restarts": 0})
    with pytest.raises(UsageError, match="const_factor"):
        CWLinf().configured({"const_factor": 1.0})


# --------------------------------------------------------------------------- C&W


def test_cw_l2_finds_small_perturbations_and_max_norm_projects_them(
    binary: tuple[Any, DatasetBundle],
) -> None:
    estimator, x, y = _batch(binary)
    free = CWL2().generate(estimator, x, y, 0.0, seed=0)
    norms = (free - x).flatten(1).norm(dim=1)
    assert _accuracy(estimator, free, y) == 0.0  # unbounded: every sample is broken
    assert bool((norms > 0).all())
    radius = float(norms.median())
    bounded = CWL2().configured({"max_norm": radius}).generate(estimator, x, y, 0.0, seed=0)
    bounded_norms = (bounded - x).flatten(1).norm(dim=1)
    assert float(bounded_norms.max()) <= radius + 1e-5
    inside = norms <= radius
    assert torch.equal(bounded[inside], free[inside])  # short perturbations are kept as they are
    # longer ones keep their direction at length max_norm (projection onto the ball)
    direction = F.cosine_similarity((bounded - x).flatten(1)[~inside], (free - x).flatten(1)[~inside])
    assert bool((direction > 0.999).all())
    assert torch.allclose(bounded_norms[~inside], torch.full_like(bounded_norms[~inside], radius), atol=1e-4)


def test_cw_l2_confidence_buys_margin_with_distance(binary: tuple[Any, DatasetBundle]) -> None:
    estimator, x, y = _batch(binary, 6)
    low = CWL2().generate(estimator, x, y, 0.0, seed=0)
    high = CWL2().generate(estimator, x, y, 2.0, seed=0)
    assert float((high - x).flatten(1).norm(dim=1).mean()) > float((low - x).flatten(1).norm(dim=1).mean())


def test_cw_linf_stays_in_the_ball_and_breaks_what_pgd_breaks(binary: tuple[Any, DatasetBundle]) -> None:
    estimator, x, y = _batch(binary)
    pgd = _accuracy(estimator, PGD().generate(estimator, x, y, EPS, seed=0), y)
    x_adv = CWLinf().generate(estimator, x, y, EPS, seed=0)
    assert float((x_adv - x).abs().max()) <= EPS + 1e-6
    assert _accuracy(estimator, x_adv, y) <= pgd + 0.1
    assert _accuracy(estimator, x_adv, y) < _accuracy(estimator, x, y) == 1.0


# --------------------------------------------------------------------------- APGD, AutoAttack


def test_apgd_dlr_and_ce_break_a_three_class_model(three_class: tuple[Any, DatasetBundle]) -> None:
    estimator, x, y = _batch(three_class)
    clean = _accuracy(estimator, x, y)
    for attack in (APGDCE(), APGDDLR()):
        x_adv = attack.generate(estimator, x, y, EPS3, seed=0)
        assert float((x_adv - x).abs().max()) <= EPS3 + 1e-6
        assert _accuracy(estimator, x_adv, y) < clean


def test_autoattack_is_at_least_as_strong_as_pgd(three_class: tuple[Any, DatasetBundle]) -> None:
    estimator, x, y = _batch(three_class, 16)
    for eps in (0.025, EPS3):
        pgd = _accuracy(estimator, PGD().generate(estimator, x, y, eps, seed=0), y)
        attack = AutoAttack().configured({"square_queries": 100})
        x_adv = attack.generate(estimator, x, y, eps, seed=0)
        assert float((x_adv - x).abs().max()) <= eps + 1e-6
        assert _accuracy(estimator, x_adv, y) <= pgd


def test_autoattack_versions_run_the_documented_attacks(
    binary: tuple[Any, DatasetBundle], three_class: tuple[Any, DatasetBundle]
) -> None:
    def stages(version: str, estimator: Any) -> list[tuple[str, Any]]:
        attacks = AutoAttack().configured({"version": version}).attacks(estimator, EPS, 8)
        return [(type(a).__name__, getattr(a, "loss_type", getattr(a, "max_iter", None))) for a in attacks]

    three, two = three_class[0], binary[0]
    assert stages("standard", three) == [
        ("AutoProjectedGradientDescent", "cross_entropy"),
        ("TopClassesTargetedAPGD", None),
        ("SquareAttack", 5000),
    ]
    assert stages("fast", three) == [
        ("AutoProjectedGradientDescent", "cross_entropy"),
        ("AutoProjectedGradientDescent", "difference_logits_ratio"),
    ]
    assert stages("standard", two) == [
        ("AutoProjectedGradientDescent", "cross_entropy"),
        ("SquareAttack", 5000),
    ]
    assert stages("fast", two) == [("AutoProjectedGradientDescent", "cross_entropy")]
    fast = AutoAttack().configured({"version": "fast"}).attacks(three, EPS, 8)
    assert [a.max_iter for a in fast] == [20, 20]
    standard = AutoAttack().attacks(three, EPS, 8)
    assert standard[0].max_iter == 100 and standard[1].n_target_classes == 9
    assert isinstance(AutoAttack().make(three, EPS, 8), SequentialAutoAttack)


def test_apgd_t_targets_the_runner_up_classes(three_class: tuple[Any, DatasetBundle]) -> None:
    estimator, x, y = _batch(three_class)
    targeted = TopClassesTargetedAPGD(
        estimator, eps=EPS3, eps_step=2 * EPS3, max_iter=20, n_target_classes=9, batch_size=12
    )
    x_adv = torch.from_numpy(targeted.generate(x.numpy(), y=y.numpy()))
    assert float((x_adv - x).abs().max()) <= EPS3 + 1e-6
    assert _accuracy(estimator, x_adv, y) < _accuracy(estimator, x, y)


# --------------------------------------------------------------------------- black box


def test_square_counts_its_queries_within_what_its_settings_allow(binary: tuple[Any, DatasetBundle]) -> None:
    estimator, x, y = _batch(binary)
    n = len(x)
    queries = {}
    for max_iter in (10, 40):
        result = Square().configured({"max_iter": max_iter}).generate(estimator, x, y, 0.02, seed=0)
        queries[max_iter] = result.totals["queries"]
        # ART scores all N samples, then the current and the candidate point of every sample
        # still classified correctly, once before the iterations and once per iteration
        assert n <= queries[max_iter] <= 3 * n * (max_iter + 1)
        if _accuracy(estimator, result.x_adv, y) == 1.0:  # nothing broken: every sample every time
            assert queries[max_iter] == 3 * n * (max_iter + 1)
    assert queries[40] > queries[10]
    broken = Square().configured({"max_iter": 40}).generate(estimator, x, y, 0.1, seed=0)
    assert _accuracy(estimator, broken.x_adv, y) < 1.0
    assert n <= broken.totals["queries"] < 3 * n * 41  # broken samples stop costing queries
    assert Square().generate(estimator, x, y, 0.0, seed=0).totals == {"queries": 0.0}


def test_hsj_threat_model_and_default_budgets_follow_its_norm() -> None:
    assert HopSkipJump().threat_model == "linf"
    assert HopSkipJump().default_budgets == (4 / 255, 8 / 255)
    l2 = HopSkipJump().configured({"norm": "l2"})
    assert l2.threat_model == "l2" and l2.default_budgets == (0.5, 1.0)


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.1), ("l2", 1.5)])
def test_hsj_breaks_samples_inside_the_ball_and_counts_queries(
    norm: str, eps: float, binary: tuple[Any, DatasetBundle]
) -> None:
    estimator, x, y = _batch(binary, 6)
    attack = HopSkipJump().configured({"norm": norm, "max_iter": 5, "max_eval": 200})
    result = attack.generate(estimator, x, y, eps, seed=1)
    delta = (result.x_adv - x).flatten(1)
    size = delta.abs().amax(dim=1) if norm == "linf" else delta.norm(dim=1)
    assert float(size.max()) <= eps + 1e-5
    assert _accuracy(estimator, result.x_adv, y) < _accuracy(estimator, x, y)
    assert result.totals["queries"] > 5 * len(x)  # far more than one query per sample
    again = attack.generate(estimator, x, y, eps, seed=1)
    assert torch.equal(again.x_adv, result.x_adv) and again.totals == result.totals


# --------------------------------------------------------------------------- minimal attacks


def test_deepfool_breaks_every_correct_sample_and_leaves_wrong_ones(
    binary: tuple[Any, DatasetBundle],
) -> None:
    estimator, x, y = _batch(binary)
    y = y.clone()
    y[:2] = 1 - y[:2]  # two samples whose "label" the model gets wrong
    x_adv = DeepFool().generate(estimator, x, y, 0.02, seed=0)
    assert torch.equal(x_adv[:2], x[:2])
    assert _accuracy(estimator, x_adv, y) == 0.0
    bounded = DeepFool().configured({"max_norm": 0.1}).generate(estimator, x, y, 0.02, seed=0)
    assert float((bounded - x).flatten(1).norm(dim=1).max()) <= 0.1 + 1e-5


def test_minimal_attacks_declare_their_margin_budgets() -> None:
    for attack, budget in ((CWL2(), "confidence"), (DeepFool(), "overshoot")):
        assert attack.threat_model == "l2-minimal"
        assert attack.budget_name == budget and not attack.budget_on_intensity_scale
