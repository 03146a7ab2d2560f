"""The MONAI 3D segmentation models: shapes, the reference UNETR configuration, weights files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.networks.nets import UNETR as MonaiUNETR

from medbench.errors import UsageError
from medbench_models.segmentation3d import UNETR, SwinUNETR, TinyUNETR, UNet3D


@pytest.mark.parametrize(
    ("model", "roi"),
    [
        (TinyUNETR().configured({"roi": 32}), 32),
        (UNet3D().configured({"roi": 32}), 32),
        (SwinUNETR().configured({"roi": 64, "feature_size": 12}), 64),
    ],
)
def test_logits_have_one_channel_per_class(model, roi: int) -> None:  # type: ignore[no-untyped-def]
    network = model.build("segmentation", 1, 5)
    with torch.no_grad():
        logits = network(torch.rand(1, 1, roi, roi, roi))
    assert logits.shape == (1, 5, roi, roi, roi)
    assert model.roi_size() == (roi, roi, roi)
    assert model.normalization(1).mean == (0.0,) and model.normalization(1).std == (1.0,)


def test_unetr_is_the_reference_configuration() -> None:
    ours = UNETR().build("segmentation", 1, 14)
    reference = MonaiUNETR(
        in_channels=1,
        out_channels=14,
        img_size=(96, 96, 96),
        feature_size=16,
        hidden_size=768,
        mlp_dim=3072,
        num_heads=12,
        proj_type="perceptron",
        norm_name="instance",
        conv_block=True,
        res_block=True,
        dropout_rate=0.0,
    )
    assert [tuple(p.shape) for p in ours.parameters()] == [tuple(p.shape) for p in reference.parameters()]
    assert sum(p.numel() for p in ours.parameters()) == 92_802_478


def test_weights_round_trip_and_bad_settings(tmp_path: Path) -> None:
    model = TinyUNETR().configured({"roi": 16})
    network = model.build("segmentation", 1, 3)
    path = tmp_path / "tiny.pt"
    torch.save(network.state_dict(), path)
    loaded = model.build("segmentation", 1, 3, str(path))
    for a, b in zip(network.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(UsageError, match="classification"):
        model.build("classification", 1, 3)
    with pytest.raises(UsageError, match="roi"):
        TinyUNETR().configured({"roi": 24})
    with pytest.raises(UsageError, match="at least 64"):
        SwinUNETR().configured({"roi": 32})
