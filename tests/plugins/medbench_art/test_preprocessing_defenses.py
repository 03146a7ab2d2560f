"""ART's preprocessing defences as medbench defenses: outputs equal ART's, BPDA and EOT
gradients, and BPDA beats the naive attack on ``jpeg`` through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from art.defences.preprocessor import FeatureSqueezing as ARTFeatureSqueezing
from art.defences.preprocessor import JpegCompression
from art.defences.preprocessor import SpatialSmoothing as ARTSpatialSmoothing

from medbench.api import DefendedModel, Normalization
from medbench.cli import main
from medbench.testing import check_defense, tiny_bundle
from medbench.wrapping.bpda import EOTPyTorchClassifier
from medbench.wrapping.estimators import classifier_estimator
from medbench_art.feature_squeezing import BitDepthReduction, FeatureSqueezing
from medbench_art.gaussian_augmentation import GaussianAugmentation, GaussianNoiseInput, augment
from medbench_art.jpeg import Jpeg
from medbench_art.spatial_smoothing import MedianSmoothing, SpatialSmoothing
from medbench_art.tvm import TotalVariationMinimization

CPU = torch.device("cpu")


def _images(channels: int = 1, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(4, channels, 16, 16, generator=generator)


def _defended(preprocessors: list) -> DefendedModel:  # type: ignore[type-arg]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16 * 16, 3))
    return DefendedModel(model, Normalization((0.5,), (0.25,)), preprocessors)


def _input_gradient(preprocessors: list, x: torch.Tensor, eot_samples: int = 1) -> torch.Tensor:  # type: ignore[type-arg]
    bundle = tiny_bundle(classes=3)
    estimator = classifier_estimator(_defended(preprocessors), bundle, CPU, eot_samples)
    return torch.as_tensor(estimator.loss_gradient(x, torch.eye(3)[[0, 1, 2, 0]]))


def test_bit_depth_reduction_equals_arts_feature_squeezing() -> None:
    x = _images(3)
    expected, _ = ARTFeatureSqueezing(clip_values=(0.0, 1.0), bit_depth=4)(x.numpy())
    assert np.allclose(BitDepthReduction(4, CPU, "bpda").transform(x).numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("window", [3, 5])
def test_median_smoothing_equals_arts_numpy_spatial_smoothing(window: int) -> None:
    x = _images(3)
    art = ARTSpatialSmoothing(window_size=window, channels_first=True, clip_values=(0.0, 1.0))
    expected, _ = art(x.numpy())
    assert np.allclose(MedianSmoothing(window, CPU).transform(x).numpy(), expected, atol=1e-6)


def test_jpeg_defence_is_arts_jpeg_compression() -> None:
    x = _images(1)
    defence = Jpeg().configured({"quality": 30}).preprocessor(_Context())
    expected, _ = JpegCompression(clip_values=(0.0, 1.0), quality=30, channels_first=True)(x.numpy())
    assert np.allclose(defence.transform(x).numpy(), expected, atol=1e-6)
    assert not defence.differentiable and not defence.randomized


def test_bpda_gives_the_identity_gradient_and_blocked_gives_none() -> None:
    x = _images(1)
    squeeze = BitDepthReduction(2, CPU, "bpda")
    bpda = _input_gradient([squeeze], x)
    blocked = _input_gradient([BitDepthReduction(2, CPU, "blocked")], x)
    assert torch.count_nonzero(blocked) == 0
    # backward through the identity: the undefended model's gradient at the squeezed input
    expected = _input_gradient([], squeeze.transform(x))
    assert torch.count_nonzero(bpda) > 0
    assert torch.allclose(bpda, expected, atol=1e-7)


def test_eot_averages_gradients_over_draws_of_a_randomised_defence() -> None:
    x = _images(1)
    noise = GaussianNoiseInput(0.2, CPU)
    bundle = tiny_bundle(classes=3)
    estimator = classifier_estimator(_defended([noise]), bundle, CPU, eot_samples=5)
    assert isinstance(estimator, EOTPyTorchClassifier)
    labels = torch.eye(3)[[0, 1, 2, 0]]
    torch.manual_seed(3)
    averaged = torch.as_tensor(estimator.loss_gradient(x, labels))
    single = classifier_estimator(_defended([noise]), bundle, CPU)
    assert not isinstance(single, EOTPyTorchClassifier)
    torch.manual_seed(3)
    draws = [torch.as_tensor(single.loss_gradient(x, labels)) for _ in range(5)]
    assert torch.allclose(averaged, torch.stack(draws).mean(0), atol=1e-6)
    # deterministic defences never pay for EOT
    assert not isinstance(
        classifier_estimator(_defended([BitDepthReduction(4, CPU, "bpda")]), bundle, CPU, 5),
        EOTPyTorchClassifier,
    )


def test_gaussian_augmentation_appends_noisy_copies_like_art() -> None:
    x, y = _images(1), torch.tensor([0, 1, 2, 0])
    x_all, y_all = augment(x, y, 0.1, 0.5, torch.Generator().manual_seed(0))
    assert x_all.shape == (6, 1, 16, 16) and torch.equal(x_all[:4], x) and torch.equal(y_all[:4], y)
    assert float(x_all.min()) >= 0 and float(x_all.max()) <= 1
    # each copy is a noisy version of the sample whose label it carries
    for copy, label in zip(x_all[4:], y_all[4:], strict=True):
        distances = (x - copy).flatten(1).norm(dim=1)
        assert y[int(distances.argmin())] == label


@pytest.mark.parametrize(
    "defense",
    [
        Jpeg(),
        FeatureSqueezing(),
        SpatialSmoothing(),
        TotalVariationMinimization().configured({"max_iter": 2}),
        GaussianAugmentation().configured({"at_inference": True}),
    ],
    ids=lambda d: d.name,
)
def test_each_defense_builds_trains_and_predicts(defense) -> None:  # type: ignore[no-untyped-def]
    defended = check_defense(defense)
    if defense.name != "gaussian-augmentation":
        assert defense.kind == "preprocessing" and len(defended.preprocessors) == 1
    x = _images(1)
    pictures = defense.visualize(defended, x) if defense.kind == "preprocessing" else {}
    for rows in pictures.values():
        assert all(row.shape == x.shape for row in rows)


def test_bad_settings_are_rejected() -> None:
    from medbench.errors import UsageError

    for defense, overrides in [
        (Jpeg(), {"quality": 0}),
        (Jpeg(), {"gradient": "zero"}),
        (FeatureSqueezing(), {"bit_depth": 9}),
        (SpatialSmoothing(), {"window_size": 4}),
        (TotalVariationMinimization(), {"norm": 3}),
        (GaussianAugmentation(), {"ratio": 0}),
    ]:
        with pytest.raises(UsageError):
            defense.configured(overrides)


class _Context:
    device = CPU


def test_bpda_attack_on_jpeg_is_at_least_as_strong_as_the_naive_attack(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "run",
        "--dataset",
        "phantom2d",
        "--set",
        "dataset.phantom2d.n_samples=1200",
        "--set",
        "dataset.phantom2d.image_size=32",
        "--model",
        "smallcnn",
        "--epochs",
        "3",
        "--n-eval",
        "48",
        "--defense",
        "jpeg,jpeg[gradient=blocked]",
        "--attack",
        "pgd",
        "--eps",
        "8/255",
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--json",
    ]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    assert exit_info.value.code in (0, None), captured.err
    cells = {c["defense"]: c["metrics"] for c in json.loads(captured.out)["cells"]}
    bpda, naive = cells["jpeg"], cells["jpeg[gradient=blocked]"]
    assert bpda["clean_accuracy"] == naive["clean_accuracy"]
    # without a gradient PGD only takes its random start: it barely hurts
    assert bpda["robust_accuracy"] <= naive["robust_accuracy"]
    assert bpda["robust_accuracy"] < bpda["clean_accuracy"]
