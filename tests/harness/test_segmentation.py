"""Segmentation core: Dice+CE, Dice and HD95 against MONAI, the ART estimator, patch-wise attacks."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from art.attacks.evasion import (
    BasicIterativeMethod,
    FastGradientMethod,
    MomentumIterativeMethod,
    ProjectedGradientDescent,
)
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric, HausdorffDistanceMetric

from medbench.api import DefendedModel, Normalization
from medbench.measuring.segmentation_metrics import (
    dice_ce_loss,
    dice_per_class,
    hd95_per_class,
    image_means,
    mean_defined,
    one_hot,
)
from medbench.reporting.images import label_colors
from medbench.wrapping.segmentation import SegmentationEstimator, attack_patchwise
from medbench_art.random_start_pgd import RandomStartPGD


def _hand_made_masks() -> tuple[torch.Tensor, torch.Tensor]:
    """Two 3D label maps with 4 classes: overlapping cubes, a missed class, a spurious class."""
    labels = torch.zeros(2, 12, 12, 12, dtype=torch.long)
    prediction = torch.zeros_like(labels)
    labels[0, 2:6, 2:6, 2:6] = 1
    prediction[0, 3:7, 2:6, 2:6] = 1  # shifted by one voxel
    labels[0, 8:11, 8:11, 8:11] = 2
    prediction[0, 8:11, 8:11, 9:12] = 2
    labels[1, 1:5, 1:5, 1:5] = 1
    prediction[1, 1:5, 1:5, 1:5] = 1  # exact
    labels[1, 6:10, 6:10, 6:10] = 3  # missed entirely
    prediction[1, 0, 0, 0] = 2  # spurious voxel of a class absent from the ground truth
    return prediction, labels


def test_dice_ce_loss_matches_monai() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 6, 7, 5)
    labels = torch.randint(0, 4, (2, 6, 7, 5))
    reference = DiceCELoss(to_onehot_y=True, softmax=True, squared_pred=True, smooth_nr=0.0, smooth_dr=1e-6)
    assert torch.allclose(dice_ce_loss(logits, labels), reference(logits, labels[:, None]), atol=1e-6)
    assert torch.allclose(
        dice_ce_loss(logits, labels[:, None]), reference(logits, labels[:, None]), atol=1e-6
    )


def test_dice_ce_loss_rejects_mismatched_labels() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        dice_ce_loss(torch.randn(1, 3, 4, 4, 4), torch.zeros(1, 4, 4, 5, dtype=torch.long))


def test_dice_matches_monai_dice_metric_on_hand_made_masks() -> None:
    prediction, labels = _hand_made_masks()
    ours = dice_per_class(prediction, labels, 4)
    monai = DiceMetric(include_background=True, reduction="none")(one_hot(prediction, 4), one_hot(labels, 4))
    assert torch.allclose(ours, monai.double(), equal_nan=True)
    assert ours[0, 1].item() == pytest.approx(2 * 48 / 128)  # 4x4x4 cubes overlapping in 3x4x4
    assert math.isnan(ours[1, 2].item())  # class 2 is absent from the ground truth of image 1
    assert ours[1, 3].item() == 0.0  # missed class


def test_hd95_matches_monai_on_hand_made_masks() -> None:
    prediction, labels = _hand_made_masks()
    ours = hd95_per_class(prediction, labels, 4)
    metric = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")
    monai = metric(one_hot(prediction, 4), one_hot(labels, 4))
    assert torch.allclose(ours, monai.double(), equal_nan=True)
    assert ours[0, 1].item() == pytest.approx(1.0)  # a one-voxel shift
    assert ours[1, 1].item() == 0.0


def test_reference_reduction_is_nanmean_per_image_then_mean() -> None:
    per_class = torch.tensor([[1.0, float("nan"), 0.5], [float("nan"), float("nan"), float("nan")]])
    means = image_means(per_class)
    assert means[0].item() == pytest.approx(0.75)
    assert math.isnan(means[1].item())
    assert mean_defined(means) == pytest.approx(0.75)


def test_label_colors_are_rgb_with_black_background() -> None:
    colors = label_colors(torch.tensor([[[0, 1], [2, 20]]]))
    assert colors.shape == (1, 3, 2, 2)
    assert colors[0, :, 0, 0].tolist() == [0.0, 0.0, 0.0]
    assert colors.min() >= 0 and colors.max() <= 1


class _TinySegmenter(torch.nn.Module):
    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, classes, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _estimator(roi: tuple[int, ...] | None = (8, 8, 8)) -> SegmentationEstimator:
    torch.manual_seed(0)
    defended = DefendedModel(_TinySegmenter(), Normalization((0.5,), (0.25,)))
    return SegmentationEstimator(
        defended, nb_classes=3, input_shape=(1, 8, 8, 8), device=torch.device("cpu"), roi_size=roi
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda e: FastGradientMethod(e, eps=4 / 255),
        lambda e: BasicIterativeMethod(e, eps=4 / 255, eps_step=0.01, max_iter=3, verbose=False),
        lambda e: ProjectedGradientDescent(e, eps=8 / 255, eps_step=0.01, max_iter=3, verbose=False),
        lambda e: MomentumIterativeMethod(e, eps=4 / 255, eps_step=0.01, max_iter=3, verbose=False),
        lambda e: RandomStartPGD(e, eps=8 / 255, eps_step=0.01, max_iter=3, num_random_init=1, verbose=False),
    ],
)
def test_art_attacks_respect_budget_and_range_on_3d_input(make) -> None:  # type: ignore[no-untyped-def]
    estimator = _estimator()
    rng = np.random.default_rng(0)
    x = rng.random((2, 1, 8, 8, 8), dtype=np.float32)
    x[0, 0, :2] = 1.0  # saturated voxels must stay in range
    y = rng.integers(0, 3, (2, 8, 8, 8))
    attack = make(estimator)
    x_adv = attack.generate(x=x, y=y)
    eps = attack.eps
    assert x_adv.shape == x.shape
    assert np.abs(x_adv - x).max() <= eps + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert np.abs(x_adv - x).max() > 0.5 * eps  # it did move
    assert estimator.compute_loss(x_adv, y) > estimator.compute_loss(x, y)


def test_art_pgd_refuses_random_start_without_our_subclass() -> None:
    estimator = _estimator()
    attack = ProjectedGradientDescent(estimator, eps=0.03, eps_step=0.01, max_iter=1, num_random_init=1)
    x = np.zeros((1, 1, 8, 8, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="only supported for classification"):
        attack.generate(x=x, y=np.zeros((1, 8, 8, 8), dtype=np.int64))


def test_random_start_pgd_starts_inside_the_ball_and_is_seeded() -> None:
    estimator = _estimator()
    x = np.full((1, 1, 8, 8, 8), 0.5, dtype=np.float32)
    y = np.zeros((1, 8, 8, 8), dtype=np.int64)
    runs = []
    for _ in range(2):
        np.random.seed(3)
        attack = RandomStartPGD(
            estimator, eps=0.05, eps_step=1e-4, max_iter=1, num_random_init=1, verbose=False
        )
        runs.append(attack.generate(x=x, y=y))
    assert np.array_equal(runs[0], runs[1])
    assert np.abs(runs[0] - x).max() <= 0.05 + 1e-6
    assert np.abs(runs[0] - x).std() > 0.01  # a spread-out random start, not a single step
    with pytest.raises(ValueError, match="num_random_init=1"):
        RandomStartPGD(estimator, eps=0.05, eps_step=0.01, max_iter=1, num_random_init=2).generate(x=x, y=y)


def test_estimator_accepts_tensors_and_predicted_scores_as_labels() -> None:
    estimator = _estimator()
    x = torch.rand(2, 1, 8, 8, 8)
    y = torch.randint(0, 3, (2, 8, 8, 8))
    gradient = estimator.loss_gradient(x, y)
    assert isinstance(gradient, torch.Tensor) and gradient.shape == x.shape
    scores = estimator.predict(x.numpy())
    assert scores.shape == (2, 3, 8, 8, 8)
    from_scores = estimator.loss_gradient(x.numpy(), scores)
    from_labels = estimator.loss_gradient(x.numpy(), scores.argmax(axis=1))
    assert np.allclose(from_scores, from_labels)
    activations = estimator.get_activations(x.numpy(), "body.0", batch_size=1)
    assert activations.shape == (2, 4, 8, 8, 8)


def test_sliding_window_prediction_of_a_larger_volume() -> None:
    torch.manual_seed(0)
    pointwise = torch.nn.Conv3d(1, 3, 1)  # no spatial context: windows must agree with one pass
    defended = DefendedModel(pointwise, Normalization((0.0,), (1.0,)))
    estimator = SegmentationEstimator(
        defended, nb_classes=3, input_shape=(1, 8, 8, 8), device=torch.device("cpu"), roi_size=(8, 8, 8)
    )
    x = torch.rand(1, 1, 12, 10, 8)
    assert estimator.needs_window(x)
    logits = estimator.predict_logits(x)
    assert logits.shape == (1, 3, 12, 10, 8)
    assert torch.allclose(logits, estimator.logits(x), atol=1e-5)
    assert not estimator.needs_window(torch.rand(1, 1, 8, 8, 8))


def test_patchwise_attack_covers_every_voxel_once_and_pads_small_axes() -> None:
    x = torch.rand(2, 1, 20, 12, 6)
    y = torch.zeros(2, 20, 12, 6, dtype=torch.long)
    calls = []

    def attack(patches: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        calls.append(patches.shape)
        assert labels.shape == (patches.shape[0], 8, 8, 8)
        return (patches + 0.01).clamp(0, 1)

    out = attack_patchwise(attack, x, y, (8, 8, 8), patches_per_batch=4)
    assert out.shape == x.shape
    assert torch.allclose(out, (x + 0.01).clamp(0, 1))
    assert all(shape[1:] == (1, 8, 8, 8) for shape in calls)
    assert sum(shape[0] for shape in calls) == 2 * 3 * 2 * 1  # ceil(20/8) x ceil(12/8) x 1 patches


@pytest.mark.parametrize("name", ["pgd", "bim", "mifgsm"])
def test_the_torch_iterative_attacks_equal_arts_on_3d_segmentation(
    name: str, art_starts_like_medbench: Callable[[int], None]
) -> None:
    from medbench_art.bim import BIM
    from medbench_art.mifgsm import MIFGSM
    from medbench_art.pgd import PGD

    estimator = _estimator()
    rng = np.random.default_rng(1)
    x = rng.random((2, 1, 8, 8, 8), dtype=np.float32)
    y = rng.integers(0, 3, (2, 8, 8, 8))
    eps, settings = 8 / 255, {"max_iter": 3, "eps_step": 0.01}
    plugin, reference = {
        "pgd": (PGD(), RandomStartPGD(estimator, eps=eps, eps_step=0.01, max_iter=3, num_random_init=1)),
        "bim": (BIM(), BasicIterativeMethod(estimator, eps=eps, eps_step=0.01, max_iter=3)),
        "mifgsm": (MIFGSM(), MomentumIterativeMethod(estimator, eps=eps, eps_step=0.01, max_iter=3)),
    }[name]
    x_t, y_t = torch.from_numpy(x), torch.from_numpy(y)
    ours = plugin.configured(settings).generate(estimator, x_t, y_t, eps, seed=5)
    art_starts_like_medbench(5)
    expected = reference.generate(x=x, y=y)
    # ART's NumPy path accumulates MI-FGSM's momentum in float64; the signs agree
    assert np.allclose(ours.numpy(), expected, atol=1e-6)
    assert float((ours - x_t).abs().max()) <= eps + 1e-6
