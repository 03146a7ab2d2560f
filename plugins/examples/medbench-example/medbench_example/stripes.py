"""Dataset ``stripes``: horizontal vs. vertical stripes hidden in noise."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from medbench.api import Dataset, DatasetBundle


class Stripes(Dataset):
    """Two classes of sinusoidal stripe textures (random period and phase) plus Gaussian noise."""

    name = "stripes"
    description = "Synthetic horizontal vs. vertical stripes in noise, 2 classes (example plugin)"
    task = "classification"

    @dataclass(frozen=True)
    class Settings:
        """Stripes settings.

        Attributes:
            image_size: Side of the square images.
            n_samples: Total number of images (split 70/15/15).
            noise: Standard deviation of the additive noise.
        """

        image_size: int = 32
        n_samples: int = 600
        noise: float = 0.25

        def validate(self) -> None:
            if self.image_size < 8:
                raise ValueError("image_size must be >= 8")
            if self.n_samples < 20:
                raise ValueError("n_samples must be >= 20")

    def load(self, data_dir: Path | None, seed: int) -> DatasetBundle:
        settings = self.settings
        generator = torch.Generator().manual_seed(seed)
        n, size = settings.n_samples, settings.image_size
        labels = torch.arange(n) % 2
        period = 3 + 5 * torch.rand(n, generator=generator)
        phase = 2 * math.pi * torch.rand(n, generator=generator)
        grid = torch.arange(size, dtype=torch.float32)
        wave = torch.sin(2 * math.pi * grid[None, :] / period[:, None] + phase[:, None])  # (n, size)
        horizontal = wave[:, :, None].expand(n, size, size)
        vertical = wave[:, None, :].expand(n, size, size)
        images = torch.where(labels[:, None, None] == 0, horizontal, vertical)
        images = 0.5 + 0.25 * images + settings.noise * torch.randn(n, size, size, generator=generator)
        images = images.clamp(0, 1).unsqueeze(1)
        order = torch.randperm(n, generator=generator)
        images, labels = images[order], labels[order]
        n_train, n_val = int(0.7 * n), int(0.15 * n)
        fingerprint = hashlib.sha256(images.numpy().tobytes() + labels.numpy().tobytes()).hexdigest()[:16]
        return DatasetBundle(
            train=TensorDataset(images[:n_train], labels[:n_train]),
            val=TensorDataset(images[n_train : n_train + n_val], labels[n_train : n_train + n_val]),
            test=TensorDataset(images[n_train + n_val :], labels[n_train + n_val :]),
            class_names=("horizontal", "vertical"),
            input_shape=(1, size, size),
            modality="synthetic",
            fingerprint=fingerprint,
        )
