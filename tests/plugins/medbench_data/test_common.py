"""Helpers shared by the built-in datasets: splits, fingerprints, in-memory splits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from medbench_data._common import TensorSplit, fingerprint, stratified_split, validate_fractions


def test_stratified_split_partitions_each_class_deterministically() -> None:
    labels = np.array([0] * 60 + [1] * 30 + [2] * 10)
    train, val, test = stratified_split(labels, 0.2, 0.1, seed=5)
    everything = np.concatenate([train, val, test])
    assert sorted(everything.tolist()) == list(range(100)), "disjoint and complete"
    assert train.dtype == val.dtype == test.dtype == np.int64
    assert np.bincount(labels[test]).tolist() == [6, 3, 1]
    assert np.bincount(labels[val]).tolist() == [12, 6, 2]
    again = stratified_split(labels, 0.2, 0.1, seed=5)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again, strict=True))
    other = stratified_split(labels, 0.2, 0.1, seed=6)
    assert not np.array_equal(train, other[0])


def test_stratified_split_keeps_one_sample_per_class_in_train() -> None:
    labels = np.array([0, 0, 1])
    train, val, test = stratified_split(labels, 0.4, 0.4, seed=0)
    assert set(labels[train].tolist()) == {0, 1}
    assert len(train) + len(val) + len(test) == 3


def test_validate_fractions() -> None:
    validate_fractions(0.0, 0.2)
    with pytest.raises(ValueError, match="val_fraction"):
        validate_fractions(-0.1, 0.2)
    with pytest.raises(ValueError, match="test_fraction"):
        validate_fractions(0.1, 0.0)
    with pytest.raises(ValueError, match="below 1"):
        validate_fractions(0.6, 0.4)


@dataclass(frozen=True)
class _Settings:
    size: int = 8


def test_fingerprint_is_stable_and_sensitive() -> None:
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    base = fingerprint("x", _Settings(), [data], {"seed": 0})
    assert base == fingerprint("x", _Settings(), [data.copy()], {"seed": 0})
    assert base == fingerprint("x", _Settings(), [torch.from_numpy(data)], {"seed": 0})
    assert len(base) == 32 and all(c in "0123456789abcdef" for c in base)
    changed = data.copy()
    changed[0, 0] += 1
    variants = {
        fingerprint("x", _Settings(), [changed], {"seed": 0}),
        fingerprint("x", _Settings(size=9), [data], {"seed": 0}),
        fingerprint("x", _Settings(), [data], {"seed": 1}),
        fingerprint("y", _Settings(), [data], {"seed": 0}),
        fingerprint("x", _Settings(), [data.astype(np.float64)], {"seed": 0}),
        fingerprint("x", _Settings(), [data.reshape(4, 3)], {"seed": 0}),
    }
    assert base not in variants and len(variants) == 6


def test_tensor_split_serves_float_items_from_uint8_or_float() -> None:
    images = torch.tensor([[[[0, 255]]], [[[51, 102]]]], dtype=torch.uint8)
    split = TensorSplit(images, torch.tensor([0, 1]))
    image, label = split[1]
    assert len(split) == 2
    assert image.dtype == torch.float32 and torch.allclose(image, torch.tensor([[[0.2, 0.4]]]))
    assert split.images.dtype == torch.uint8, "stored compactly, not converted in place"
    assert label.dtype == torch.int64 and int(label) == 1
    floats = TensorSplit(images.float() / 255, torch.tensor([0, 1]))
    assert torch.equal(floats[0][0], torch.tensor([[[0.0, 1.0]]]))
    with pytest.raises(ValueError, match="2 images but 1 labels"):
        TensorSplit(images, torch.tensor([0]))
    with pytest.raises(ValueError, match="uint8 or float32"):
        TensorSplit(images.double(), torch.tensor([0, 1]))
