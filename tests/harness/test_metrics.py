"""Tests of medbench.measuring.metrics against scikit-image, scikit-learn and hand-computed answers."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity
from sklearn.metrics import roc_auc_score

from medbench.measuring.metrics import (
    CLASSIFICATION_METRICS,
    accuracy,
    attack_success_rate,
    auc_from_logits,
    classification_metrics,
    perturbation_norms,
    robust_accuracy,
    roc_auc,
    ssim,
)

# --------------------------------------------------------------------------- SSIM


def _pair(
    rng: np.random.Generator, shape: tuple[int, ...], noise: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """A random image in [0, 1] and a noisy, clipped copy of it (float64)."""
    a = rng.random(shape)
    b = np.clip(a + rng.normal(0.0, noise, shape), 0.0, 1.0)
    return a, b


@pytest.mark.parametrize("spatial", [(16, 16), (33, 40), (64, 64), (7, 9)])
@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_matches_skimage_2d(spatial: tuple[int, int], channels: int) -> None:
    rng = np.random.default_rng([*spatial, channels])
    batch = [_pair(rng, (channels, *spatial)) for _ in range(3)]
    x = torch.from_numpy(np.stack([a for a, _ in batch]))
    y = torch.from_numpy(np.stack([b for _, b in batch]))
    got = ssim(x, y, data_range=1.0)
    assert got.shape == (3,)
    for i, (a, b) in enumerate(batch):
        if channels == 1:
            want = structural_similarity(a[0], b[0], data_range=1.0)
        else:
            want = structural_similarity(a, b, data_range=1.0, channel_axis=0)
        assert got[i].item() == pytest.approx(want, abs=1e-5)


@pytest.mark.parametrize("channels", [1, 2])
def test_ssim_matches_skimage_3d(channels: int) -> None:
    rng = np.random.default_rng(3 + channels)
    batch = [_pair(rng, (channels, 10, 12, 14)) for _ in range(2)]
    x = torch.from_numpy(np.stack([a for a, _ in batch]))
    y = torch.from_numpy(np.stack([b for _, b in batch]))
    got = ssim(x, y)
    for i, (a, b) in enumerate(batch):
        if channels == 1:
            want = structural_similarity(a[0], b[0], data_range=1.0)
        else:
            want = structural_similarity(a, b, data_range=1.0, channel_axis=0)
        assert got[i].item() == pytest.approx(want, abs=1e-5)


def test_ssim_float32_input_matches_skimage_float64_on_same_values() -> None:
    rng = np.random.default_rng(11)
    a, b = _pair(rng, (1, 40, 40), noise=0.01)
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    got = ssim(torch.from_numpy(a32)[None], torch.from_numpy(b32)[None]).item()
    want = structural_similarity(a32.astype(np.float64)[0], b32.astype(np.float64)[0], data_range=1.0)
    assert got == pytest.approx(want, abs=1e-12)


def test_ssim_smooth_image_small_perturbation() -> None:
    """Nearly constant patches: E[x^2] - E[x]^2 cancels badly in float32, not in float64."""
    yy, xx = np.mgrid[0:48, 0:48] / 47.0
    a = (0.6 + 0.05 * np.sin(3 * xx) * np.cos(2 * yy))[None]
    b = np.clip(a + (1 / 255) * np.sign(np.random.default_rng(5).standard_normal(a.shape)), 0, 1)
    got = ssim(torch.from_numpy(a)[None], torch.from_numpy(b)[None]).item()
    assert got == pytest.approx(structural_similarity(a[0], b[0], data_range=1.0), abs=1e-9)


def test_ssim_data_range() -> None:
    rng = np.random.default_rng(2)
    a, b = _pair(rng, (1, 20, 20))
    got = ssim(torch.from_numpy(a * 255)[None], torch.from_numpy(b * 255)[None], data_range=255.0)
    want = structural_similarity(a[0] * 255, b[0] * 255, data_range=255.0)
    assert got.item() == pytest.approx(want, abs=1e-8)


@pytest.mark.parametrize("shape", [(2, 3, 16, 16), (2, 1, 8, 9, 10)])
def test_ssim_identity_is_one(shape: tuple[int, ...]) -> None:
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ssim(x, x.clone()), torch.ones(shape[0], dtype=torch.float64))


def test_ssim_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        ssim(torch.rand(1, 1, 6, 20), torch.rand(1, 1, 6, 20))
    with pytest.raises(ValueError, match="differ"):
        ssim(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 9))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        ssim(torch.rand(8, 8), torch.rand(8, 8))
    with pytest.raises(ValueError, match="odd"):
        ssim(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8), win_size=4)


# --------------------------------------------------------------------------- AUC


def _brute_force_auc(scores: np.ndarray, targets: np.ndarray) -> float:
    pos, neg = scores[targets == 1], scores[targets == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("levels", [None, 2, 3, 5, 20])
@pytest.mark.parametrize("seed", range(4))
def test_roc_auc_matches_sklearn_and_brute_force(levels: int | None, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 60
    targets = rng.integers(0, 2, n)
    scores = rng.normal(size=n) + 0.7 * targets
    if levels is not None:  # heavy ties: only a few distinct score values
        scores = np.round(scores * levels / 4) / levels
    got = roc_auc(torch.from_numpy(scores), torch.from_numpy(targets))
    assert isinstance(got, float)
    assert got == pytest.approx(roc_auc_score(targets, scores), abs=1e-12)
    assert got == pytest.approx(_brute_force_auc(scores, targets), abs=1e-12)


def test_roc_auc_known_values() -> None:
    t = torch.tensor([0, 0, 1, 1])
    assert roc_auc(torch.tensor([0.1, 0.2, 0.3, 0.4]), t) == 1.0
    assert roc_auc(torch.tensor([0.4, 0.3, 0.2, 0.1]), t) == 0.0
    assert roc_auc(torch.tensor([0.5, 0.5, 0.5, 0.5]), t) == 0.5
    assert roc_auc(torch.tensor([0.1, 0.3, 0.3, 0.4]), t) == 0.875
    assert roc_auc(torch.tensor([0.1, 0.3, 0.3, 0.4]), t.bool()) == 0.875
    assert roc_auc(torch.tensor([0.1, 0.3, 0.3, 0.4], dtype=torch.float16), t.float()) == 0.875


def test_roc_auc_nan_cases() -> None:
    assert math.isnan(roc_auc(torch.tensor([0.1, 0.2]), torch.tensor([1, 1])))
    assert math.isnan(roc_auc(torch.tensor([0.1, 0.2]), torch.tensor([0, 0])))
    assert math.isnan(roc_auc(torch.tensor([]), torch.tensor([], dtype=torch.long)))
    assert math.isnan(roc_auc(torch.tensor([0.1, float("nan")]), torch.tensor([0, 1])))


def test_roc_auc_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="0 or 1"):
        roc_auc(torch.tensor([0.1, 0.2]), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="1-D"):
        roc_auc(torch.tensor([0.1, 0.2]), torch.tensor([0, 1, 1]))


def test_auc_binary_uses_softmax_of_class_one() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 2)) * 3
    labels = rng.integers(0, 2, 50)
    probs = torch.softmax(torch.from_numpy(logits), dim=1)[:, 1].numpy()
    got = auc_from_logits(torch.from_numpy(logits).float(), torch.from_numpy(labels))
    assert got == pytest.approx(roc_auc_score(labels, probs), abs=1e-12)


def test_auc_binary_no_saturation_ties() -> None:
    """Margins of 40 and 60 both give softmax p == 1.0 in float64, yet rank differently."""
    logits = torch.tensor([[0.0, 40.0], [0.0, 60.0], [0.0, 50.0]])
    labels = torch.tensor([0, 1, 1])
    assert auc_from_logits(logits, labels) == 1.0


def test_auc_single_logit_binary() -> None:
    logits = torch.tensor([[-2.0], [0.5], [1.0], [-0.1]])
    labels = torch.tensor([0, 1, 1, 0])
    assert auc_from_logits(logits, labels) == 1.0
    assert accuracy(logits, labels) == 1.0


@pytest.mark.parametrize("seed", range(3))
def test_auc_multiclass_matches_sklearn_ovr_macro(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, k = 80, 4
    labels = np.concatenate([np.arange(k), rng.integers(0, k, n - k)])  # every class present
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[labels]
    probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    want = roc_auc_score(labels, probs, multi_class="ovr", average="macro")
    got = auc_from_logits(torch.from_numpy(logits), torch.from_numpy(labels))
    assert got == pytest.approx(want, abs=1e-12)


def test_auc_multiclass_averages_only_present_classes() -> None:
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 40)  # classes 0 and 1 of 3
    logits = rng.normal(size=(40, 3))
    probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    want = np.mean([roc_auc_score(labels == c, probs[:, c]) for c in (0, 1)])
    got = auc_from_logits(torch.from_numpy(logits), torch.from_numpy(labels))
    assert got == pytest.approx(want, abs=1e-12)


def test_auc_multiclass_single_class_is_nan() -> None:
    assert math.isnan(auc_from_logits(torch.randn(5, 3), torch.full((5,), 2)))
    assert math.isnan(auc_from_logits(torch.randn(5, 2), torch.zeros(5, dtype=torch.long)))


def test_auc_multilabel_mean_over_defined_labels() -> None:
    rng = np.random.default_rng(1)
    n = 30
    targets = rng.integers(0, 2, (n, 4))
    targets[:, 2] = 1  # label 2 undefined: only positives
    logits = rng.normal(size=(n, 4)) + targets
    sig = 1 / (1 + np.exp(-logits))
    want = np.mean([roc_auc_score(targets[:, j], sig[:, j]) for j in (0, 1, 3)])
    got = auc_from_logits(torch.from_numpy(logits), torch.from_numpy(targets), multilabel=True)
    assert got == pytest.approx(want, abs=1e-12)


def test_auc_multilabel_all_undefined_is_nan() -> None:
    targets = torch.tensor([[1, 0], [1, 0], [1, 0]])
    assert math.isnan(auc_from_logits(torch.randn(3, 2), targets, multilabel=True))


# --------------------------------------------------------------------------- accuracy, attack success


def test_accuracy_single_label() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 1.0, 5.0], [4.0, 0.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 2])
    assert accuracy(logits, labels) == 0.5


def test_accuracy_multilabel_exact_match_at_zero() -> None:
    logits = torch.tensor([[1.0, -1.0], [1.0, 1.0], [-0.5, -2.0], [0.0, 3.0]])
    labels = torch.tensor([[1, 0], [1, 0], [0, 0], [1, 1]])
    # sample 1: second label wrong; sample 3: logit exactly 0 predicts negative, label 1 -> wrong
    assert accuracy(logits, labels, multilabel=True) == 0.5


def test_accuracy_empty_and_bad_labels() -> None:
    assert math.isnan(accuracy(torch.empty(0, 3), torch.empty(0, dtype=torch.long)))
    with pytest.raises(ValueError, match="class indices"):
        accuracy(torch.randn(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="shape"):
        accuracy(torch.randn(2, 3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="0 or 1"):
        accuracy(torch.randn(2, 3), torch.tensor([[0, 1, 2], [0, 0, 0]]), multilabel=True)


def test_attack_success_rate_single_label() -> None:
    labels = torch.tensor([0, 1, 2, 0, 1])
    clean = torch.eye(3)[torch.tensor([0, 1, 2, 1, 1])]  # 4 clean-correct (sample 3 wrong)
    adv = torch.eye(3)[torch.tensor([1, 1, 0, 0, 1])]  # flips samples 0 and 2; sample 3 "fixed"
    assert attack_success_rate(clean, adv, labels) == 0.5
    assert accuracy(adv, labels) == 0.6


def test_attack_success_rate_multilabel() -> None:
    labels = torch.tensor([[1, 0], [0, 1], [1, 1]])
    clean = torch.tensor([[2.0, -2.0], [-1.0, 1.0], [-1.0, 1.0]])  # 2 correct
    adv = torch.tensor([[2.0, 0.5], [-1.0, 1.0], [1.0, 1.0]])  # flips sample 0
    assert attack_success_rate(clean, adv, labels, multilabel=True) == 0.5


def test_attack_success_rate_nan_without_clean_correct() -> None:
    labels = torch.tensor([0, 0])
    wrong = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    assert math.isnan(attack_success_rate(wrong, wrong, labels))


# --------------------------------------------------------------------------- norms


def test_perturbation_norms_known_values() -> None:
    x = torch.zeros(2, 1, 2, 2)
    x_adv = x.clone()
    x_adv[0, 0, 0, 0] = 0.3
    x_adv[0, 0, 1, 1] = -0.4  # sample 0: linf 0.4, l2 0.5
    x_adv[1] = 0.1  # sample 1: linf 0.1, l2 sqrt(4 * 0.01) = 0.2
    linf, l2 = perturbation_norms(x, x_adv)
    assert linf == pytest.approx(0.4)
    assert l2 == pytest.approx((0.5 + 0.2) / 2)


def test_perturbation_norms_3d_and_zero() -> None:
    x = torch.rand(3, 2, 4, 5, 6, generator=torch.Generator().manual_seed(0))
    assert perturbation_norms(x, x.clone()) == (0.0, 0.0)
    x_adv = x + 8 / 255  # every one of the 240 values moved by eps
    linf, l2 = perturbation_norms(x, x_adv)
    assert linf == pytest.approx(8 / 255, abs=1e-6)
    assert l2 == pytest.approx(8 / 255 * math.sqrt(240), abs=1e-5)


def test_perturbation_norms_empty() -> None:
    linf, l2 = perturbation_norms(torch.empty(0, 1, 8, 8), torch.empty(0, 1, 8, 8))
    assert math.isnan(linf) and math.isnan(l2)


# --------------------------------------------------------------------------- all together


def test_metric_names_contract() -> None:
    assert CLASSIFICATION_METRICS == (
        "clean_accuracy",
        "robust_accuracy",
        "attack_success_rate",
        "clean_auc",
        "robust_auc",
        "linf_max",
        "l2_mean",
        "ssim_mean",
        "seconds",
    )


def test_classification_metrics() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 16, 16, generator=gen)
    x_adv = (x + 0.02 * torch.sign(torch.randn(x.shape, generator=gen))).clamp(0, 1)
    labels = torch.tensor([0, 1, 1, 0])
    clean = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    adv = torch.tensor([[0.0, 2.0], [0.0, 1.0], [0.5, 0.0], [1.0, 0.0]])
    got = classification_metrics(labels, clean, adv, x, x_adv)
    assert list(got) == list(CLASSIFICATION_METRICS[:-1])
    assert all(type(v) is float for v in got.values())
    assert got["clean_accuracy"] == 1.0
    assert got["robust_accuracy"] == 0.5
    assert got["attack_success_rate"] == 0.5
    assert got["clean_auc"] == 1.0
    assert got["robust_auc"] == 0.5  # margins: positives 1, -0.5; negatives 2, -1 -> 2 of 4 pairs
    assert got["linf_max"] == pytest.approx(0.02, abs=1e-6)
    assert got["l2_mean"] == pytest.approx(perturbation_norms(x, x_adv)[1])
    want_ssim = np.mean(
        [
            structural_similarity(a[0], b[0], data_range=1.0)
            for a, b in zip(x.double().numpy(), x_adv.double().numpy(), strict=True)
        ]
    )
    assert got["ssim_mean"] == pytest.approx(want_ssim, abs=1e-6)


def test_classification_metrics_multilabel() -> None:
    x = torch.rand(2, 3, 8, 8, 8, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([[1, 0], [0, 1]])
    clean = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    got = classification_metrics(labels, clean, clean, x, x, multilabel=True)
    assert got["clean_accuracy"] == got["robust_accuracy"] == 1.0
    assert got["attack_success_rate"] == 0.0
    assert got["clean_auc"] == 1.0
    assert got["linf_max"] == 0.0 and got["l2_mean"] == 0.0
    assert got["ssim_mean"] == pytest.approx(1.0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 20, 20, generator=gen)
    x_adv = (x + 0.03 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    labels = torch.tensor([0, 1, 2, 1])
    clean, adv = torch.randn(4, 3, generator=gen), torch.randn(4, 3, generator=gen)
    cpu = classification_metrics(labels, clean, adv, x, x_adv)
    cuda = classification_metrics(labels.cuda(), clean.cuda(), adv.cuda(), x.cuda(), x_adv.cuda())
    for name, value in cpu.items():
        assert cuda[name] == pytest.approx(value, abs=1e-9, nan_ok=True), name


def test_robust_accuracy_counts_only_samples_right_both_clean_and_attacked() -> None:
    labels = torch.tensor([0, 1, 1, 0])
    clean = torch.tensor([[2.0, 0.0], [3.0, 0.0], [0.0, 3.0], [1.0, 0.0]])  # sample 1 wrong on clean
    adv = torch.tensor([[0.0, 2.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])  # the attack "fixes" sample 1
    assert accuracy(adv, labels) == 0.75
    assert robust_accuracy(clean, adv, labels) == 0.5
    clean_acc = accuracy(clean, labels)
    assert robust_accuracy(clean, adv, labels) == pytest.approx(
        clean_acc * (1 - attack_success_rate(clean, adv, labels))
    )


def test_majority_rate_and_balanced_accuracy_match_scikit_learn() -> None:
    from sklearn.metrics import balanced_accuracy_score

    from medbench.measuring.chance import balanced_accuracy, majority_rate

    generator = torch.Generator().manual_seed(0)
    labels = torch.tensor([0] * 30 + [1] * 7 + [2] * 3)
    logits = torch.randn(40, 3, generator=generator)
    logits[:30, 0] += 2.0
    expected = balanced_accuracy_score(labels.numpy(), logits.argmax(1).numpy())
    assert balanced_accuracy(logits, labels) == pytest.approx(expected)
    assert majority_rate(labels) == pytest.approx(30 / 40)
