"""VAFA against a trained tiny UNETR on phantom3d: it lowers Dice more than Gaussian noise of
comparable (or worse) SSIM, the claim of paper 003's Table 1 in miniature.

Everything is the real pipeline: the ``phantom3d`` and ``unetr-tiny`` plugins, the harness's
training loop (Dice+CE, keep-best on validation Dice), the segmentation estimator, and the
``gn`` and ``vafa`` attack plugins as the matrix calls them.
"""

from __future__ import annotations

import pytest
import torch

from medbench.api import DefendedModel
from medbench.building.training import train_defended
from medbench.config.spec import TrainingSettings
from medbench.measuring.metrics import ssim
from medbench.measuring.segmentation_metrics import dice_per_class, image_means, mean_defined
from medbench.wrapping.segmentation import SegmentationEstimator
from medbench_art.gn import GaussianNoise
from medbench_data.phantom3d import Phantom3D
from medbench_models.segmentation3d import TinyUNETR
from medbench_vafa.attacks import VAFAAttack

SIZE = 32
N_TEST = 4


@pytest.fixture(scope="module")
def trained() -> tuple[SegmentationEstimator, torch.Tensor, torch.Tensor]:
    """A tiny UNETR trained on 32³ phantoms (about 30 s on 2 CPU cores), and test volumes."""
    dataset = Phantom3D(Phantom3D.Settings(image_size=SIZE, n_train=32, n_val=4, n_test=N_TEST)).load(None, 0)
    model = TinyUNETR(TinyUNETR.Settings(roi=SIZE))
    torch.manual_seed(0)
    defended = DefendedModel(model.build("segmentation", 1, 5), model.normalization(1))
    device = torch.device("cpu")
    history = train_defended(
        defended,
        dataset,
        TrainingSettings(epochs=20, batch_size=2, lr=3e-3),
        device,
        seed=0,
        roi_size=model.roi_size(),
    )
    # learned the task, with a margin that holds across library builds: 0.685 (a fresh install in
    # an earlier report) to 0.883 (torch 2.14.1 here) were seen
    # a background-only prediction scores 0 Dice on the foreground classes
    assert max(history.val_accuracy) > 0.5, f"the tiny UNETR did not learn: {history.val_accuracy}"
    estimator = SegmentationEstimator(
        defended, nb_classes=5, input_shape=dataset.input_shape, device=device, roi_size=model.roi_size()
    )
    x = torch.stack([dataset.test[i][0] for i in range(N_TEST)])
    y = torch.stack([torch.as_tensor(dataset.test[i][1]) for i in range(N_TEST)])
    return estimator, x, y


def _dice(estimator: SegmentationEstimator, x: torch.Tensor, y: torch.Tensor) -> float:
    return mean_defined(image_means(dice_per_class(estimator.predict_labels(x), y, 5)))


@pytest.mark.slow
def test_vafa_lowers_dice_more_than_gaussian_noise_at_the_same_ssim(
    trained: tuple[SegmentationEstimator, torch.Tensor, torch.Tensor],
) -> None:
    estimator, x, y = trained
    clean = _dice(estimator, x, y)
    noise = GaussianNoise().generate(estimator, x, y, 8 / 255, seed=0)
    # the reference code's variant: the one behind the paper's published figures (see docs)
    vafa = VAFAAttack().configured({"variant": "code"}).generate(estimator, x, y, 30.0, seed=0)
    assert float(vafa.min()) >= 0.0 and float(vafa.max()) <= 1.0

    noise_ssim, vafa_ssim = float(ssim(x, noise).mean()), float(ssim(x, vafa).mean())
    noise_drop, vafa_drop = clean - _dice(estimator, noise, y), clean - _dice(estimator, vafa, y)
    # VAFA is at least as similar to the clean volumes as σ = 8/255 noise is...
    assert vafa_ssim >= noise_ssim - 0.005, (vafa_ssim, noise_ssim)
    # ...and still costs clearly more Dice
    assert vafa_drop > noise_drop + 0.015, (clean, vafa_drop, noise_drop)
