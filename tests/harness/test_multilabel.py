"""Multi-label classification end to end: BCE gradients in ART, the metrics, and a CLI matrix.

The CLI test writes a learnable ChestMNIST-style archive (14 findings; finding ``j`` present iff
cell ``j`` of a 4×4 grid holds a bright square), trains smallcnn on it, and attacks it with
FGSM, PGD and Gaussian noise through ``medbench run``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.utils.data import TensorDataset

from medbench.api import DatasetBundle, DefendedModel, Normalization
from medbench.cli import main
from medbench.measuring.metrics import label_flip_rate, multilabel_metrics
from medbench.wrapping.estimators import MultiLabelPyTorchClassifier, classifier_estimator

LABELS = 14
SIDE = 28


def _bundle(n: int = 6, labels: int = 3) -> DatasetBundle:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 8, 8, generator=generator)
    y = (torch.rand(n, labels, generator=generator) > 0.5).float()
    split = TensorDataset(x, y)
    return DatasetBundle(
        train=split,
        val=split,
        test=split,
        class_names=tuple(f"finding {i}" for i in range(labels)),
        input_shape=(1, 8, 8),
        multilabel=True,
    )


def _model(labels: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, labels))


def test_art_fgsm_on_multilabel_equals_the_sign_of_the_bce_gradient() -> None:
    """ART's FGSM through medbench's estimator is one signed step on the summed BCE of all labels."""
    from art.attacks.evasion import FastGradientMethod

    bundle = _bundle()
    model = _model()
    estimator = classifier_estimator(
        DefendedModel(model, Normalization((0.5,), (0.25,))), bundle, torch.device("cpu")
    )
    assert isinstance(estimator, MultiLabelPyTorchClassifier)
    x, y = bundle.test.tensors
    eps = 8 / 255
    x_adv = FastGradientMethod(estimator, eps=eps).generate(x.numpy(), y.numpy())

    x_ref = x.clone().requires_grad_(True)
    loss = nn.BCEWithLogitsLoss()(model((x_ref - 0.5) / 0.25), y)
    (grad,) = torch.autograd.grad(loss, x_ref)
    expected = (x + eps * grad.sign()).clamp(0, 1)
    np.testing.assert_allclose(x_adv, expected.numpy(), atol=1e-6)
    assert np.abs(x_adv - x.numpy()).max() <= eps + 1e-6


def test_label_flip_rate_and_per_label_auc_against_independent_references() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, (40, 4))
    clean = rng.normal(size=(40, 4))
    adv = clean + rng.normal(scale=1.5, size=(40, 4))
    names = ("Atelectasis", "Pleural Effusion", "No-Finding", "x")
    metrics = multilabel_metrics(
        torch.from_numpy(labels).float(), torch.from_numpy(clean), torch.from_numpy(adv), names
    )
    clean_ok = (clean > 0) == labels.astype(bool)
    adv_ok = (adv > 0) == labels.astype(bool)
    assert metrics["label_flip_rate"] == pytest.approx((clean_ok & ~adv_ok).sum() / clean_ok.sum())
    for column, slug in enumerate(("atelectasis", "pleural_effusion", "no_finding", "x")):
        assert metrics[f"clean_auc_{slug}"] == pytest.approx(
            roc_auc_score(labels[:, column], clean[:, column])
        )
        assert metrics[f"robust_auc_{slug}"] == pytest.approx(
            roc_auc_score(labels[:, column], adv[:, column])
        )
    # one wrong finding per image: every sample flips, one label decision in four does
    truth = torch.tensor([[1, 0, 1, 0]] * 3).float()
    right = truth * 4 - 2
    one_wrong = right.clone()
    one_wrong[:, 0] = -2
    assert label_flip_rate(right, one_wrong, truth) == pytest.approx(0.25)
    assert math.isnan(label_flip_rate(-right, -right, truth)), "no clean-correct decision"
    with pytest.raises(ValueError, match="2 label names for 4 label columns"):
        multilabel_metrics(truth, right, right, ("a", "b"))


SPEC = """
name: multilabel
dataset: medmnist
models: [smallcnn]
defenses: [none]
attacks: [fgsm, pgd, gn]
budgets: {eps: [32/255], sigma: [32/255]}
seed: 0
training: {epochs: 10, batch_size: 32, lr: 0.01}
settings:
  attack:
    pgd: {max_iter: 10}
"""


def _write_chestmnist(path: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in (("train", 240), ("val", 40), ("test", 40)):
        labels = (rng.random((count, LABELS)) < 0.3).astype(np.uint8)
        images = rng.normal(50, 20, (count, SIDE, SIDE))
        for finding in range(LABELS):
            row, column = divmod(finding, 4)
            present = labels[:, finding].astype(bool)
            images[present, 7 * row + 1 : 7 * row + 6, 7 * column + 1 : 7 * column + 6] += 150
        arrays[f"{split}_images"] = images.clip(0, 255).astype(np.uint8)
        arrays[f"{split}_labels"] = labels
    np.savez_compressed(path, **arrays)


def test_multilabel_matrix_through_the_cli(tmp_path: Path) -> None:
    data = tmp_path / "chestmnist.npz"
    _write_chestmnist(data)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["run", "--spec", str(spec), "--data-dir", str(data), "--tracking-uri", uri]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code in (0, None)

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("multilabel")
    assert experiment is not None
    cells = {
        run.data.params["attack"]: run
        for run in client.search_runs([experiment.experiment_id])
        if run.data.tags.get("medbench.role") == "cell"
    }
    assert set(cells) == {"fgsm", "pgd", "gn"}
    for name, run in cells.items():
        assert run.info.status == "FINISHED", run.data.tags.get("medbench.error")
        metrics = run.data.metrics
        assert metrics["linf_max"] <= 32 / 255 + 1e-6 or name == "gn"
        assert metrics["clean_auc"] > 0.9, "the findings are learnable"
        per_label = [metrics["clean_auc_cardiomegaly"], metrics["robust_auc_hernia"]]
        assert all(0 <= value <= 1 for value in per_label)
        assert metrics["robust_accuracy"] <= metrics["clean_accuracy"]
    pgd, noise = cells["pgd"].data.metrics, cells["gn"].data.metrics
    assert pgd["label_flip_rate"] > noise["label_flip_rate"] + 0.05, "the BCE gradient finds the findings"
    assert pgd["robust_auc"] < pgd["clean_auc"] - 0.05
    assert pgd["attack_success_rate"] >= pgd["label_flip_rate"], "a sample flips when any label does"
