"""Per-sample outcomes: every cell's ``per_sample.npz`` agrees with its logged metrics and with
independent references (scikit-learn's AUC, MONAI's Dice), and reaches --json and Results."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import medbench
from medbench.cli import main


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten()
        )
        self.fc = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


def _data(n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    x = torch.rand(n, 1, 16, 16, generator=generator)
    y = torch.arange(n) % 2
    x[y == 1, :, 4:12, 4:12] = 0.9
    return x, y


def test_classification_samples_add_up_to_the_cells_metrics_and_sklearns_auc() -> None:
    from sklearn.metrics import roc_auc_score

    torch.manual_seed(0)
    results = medbench.evaluate(
        TinyNet(), _data(), attacks=["fgsm", "pgd"], eps=["8/255"], tracking_uri=False, progress=False
    )
    for record in results.finished:
        samples = results.cell_samples(record.run_id)
        assert list(samples["index"]) == list(range(40))
        assert str(samples["fingerprint"]) == record.dataset_fingerprint
        metrics = record.metrics
        assert samples["clean_correct"].mean() == pytest.approx(metrics["clean_accuracy"])
        assert samples["robust"].mean() == pytest.approx(metrics["robust_accuracy"])
        assert np.array_equal(samples["robust"], samples["clean_correct"] & samples["adv_correct"])
        assert float(samples["linf"].max()) == pytest.approx(metrics["linf_max"], abs=1e-6)
        assert float(samples["l2"].mean()) == pytest.approx(metrics["l2_mean"], rel=1e-5)
        assert float(samples["ssim"].mean()) == pytest.approx(metrics["ssim_mean"], abs=1e-6)
        margin = samples["adv_logits"][:, 1] - samples["adv_logits"][:, 0]
        assert roc_auc_score(samples["label"], margin) == pytest.approx(metrics["robust_auc"], abs=1e-9)
        assert np.array_equal(samples["adv_pred"], samples["adv_logits"].argmax(axis=1))
    frame = results.samples()
    assert len(frame) == 2 * 40
    assert {"run_id", "attack", "budget_text", "index", "robust", "linf"} <= set(frame.columns)


class TinySegmenter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Conv3d(1, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_segmentation_samples_are_monais_dice_per_volume_and_class() -> None:
    from monai.metrics import DiceMetric

    generator = torch.Generator().manual_seed(0)
    y = torch.zeros(3, 12, 12, 12, dtype=torch.long)
    y[:, 2:7, 2:7, 2:7] = 1
    y[:, 7:11, 6:11, 6:11] = 2
    x = (y.float() / 2 + 0.1 * torch.rand(3, 12, 12, 12, generator=generator)).clamp(0, 1)[:, None]
    torch.manual_seed(0)
    results = medbench.evaluate(
        TinySegmenter(), (x, y), attacks=["gn"], eps=["8/255"], tracking_uri=False, progress=False
    )
    (record,) = results.finished
    samples = results.cell_samples(record.run_id)
    assert samples["clean_dice"].shape == (3, 3)
    torch.manual_seed(0)  # the same initial weights as the evaluated model
    model = TinySegmenter()
    with torch.no_grad():
        prediction = model(x).argmax(dim=1)
    metric = DiceMetric(include_background=True, reduction="none", ignore_empty=True)
    one_hot = nn.functional.one_hot
    reference = metric(
        one_hot(prediction, 3).movedim(-1, 1).float(), one_hot(y, 3).movedim(-1, 1).float()
    ).numpy()
    np.testing.assert_allclose(samples["clean_dice"], reference, atol=1e-5, equal_nan=True)
    per_volume = np.nanmean(samples["adv_dice"], axis=1)
    assert float(per_volume.mean()) == pytest.approx(record.metrics["robust_dice"], abs=1e-5)


def test_the_json_document_lists_each_cells_samples(
    tmp_path: object, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDBENCH_CACHE_DIR", str(tmp_path))
    with pytest.raises(SystemExit) as done:
        main(
            [
                "run", "--dataset", "phantom2d", "--set", "dataset.phantom2d.image_size=16", "--n-eval", "12",
                "--epochs", "1", "--defense", "none", "--attack", "fgsm", "--eps", "8/255", "--json",
                "--tracking-uri", f"sqlite:///{tmp_path}/m.db",
            ]
        )  # fmt: skip
    assert done.value.code == 0
    (cell,) = json.loads(capsys.readouterr().out)["cells"]
    samples = cell["samples"]
    assert samples["index"] == list(range(12))
    assert sum(samples["robust"]) / 12 == pytest.approx(cell["metrics"]["robust_accuracy"])
    assert "clean_logits" not in samples
