"""VAFA and VAFA-2D as ART evasion attacks, usable with ART directly.

>>> from medbench_vafa.art_attack import VAFA
>>> attack = VAFA(estimator, q_max=20, block_size=(8, 8, 8))
>>> x_adv = attack.generate(x, y)     # x: (B, 1, D, H, W) in [0, 1]; y: (B, D, H, W) label maps

Any ART estimator with a ``loss_gradient`` on dense labels works (medbench's
:class:`~medbench.wrapping.segmentation.SegmentationEstimator` provides Dice+CE and keeps every step on
the device through :meth:`VAFA.generate_tensor`). After a call, :attr:`VAFA.q_tables` holds the
quantization tables of the last batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from art.attacks.attack import EvasionAttack
from art.estimators.estimator import BaseEstimator, LossGradientsMixin

from medbench_vafa.vafa import VAFAConfig, Variant, vafa


class VAFA(EvasionAttack):
    """Volumetric Adversarial Frequency Attack (3D DCT blocks; Hanif et al., 2023).

    Args:
        estimator: An ART estimator of a segmentation network with ``loss_gradient``.
        q_max: Largest quantization step: the budget (20 or 30 in the paper).
        steps: Sign steps on the tables (20).
        block_size: Block sides (8, 8, 8); the volume's sides must be multiples.
        variant: ``paper`` (q from 1, clip [1, q_max], exact rounding at the end) or ``code``
            (the reference code: q from q_max, clip [q_min, q_max], last soft-rounded step).
        q_min: Lower clip in the ``code`` variant (5).
        ssim_loss: Subtract the block-wise SSIM loss from the objective.
        renormalize: Per-slice min–max renormalisation of the result (the reference's).
        batch_size: Volumes attacked together.
    """

    attack_params = [
        *EvasionAttack.attack_params,
        "q_max",
        "steps",
        "block_size",
        "variant",
        "q_min",
        "ssim_loss",
        "renormalize",
        "batch_size",
    ]
    _estimator_requirements = (BaseEstimator, LossGradientsMixin)
    default_block: tuple[int, ...] = (8, 8, 8)

    def __init__(
        self,
        estimator: Any,
        q_max: float = 20.0,
        steps: int = 20,
        block_size: tuple[int, ...] | None = None,
        variant: Variant = "paper",
        q_min: float = 5.0,
        ssim_loss: bool = True,
        renormalize: bool = True,
        batch_size: int = 1,
    ) -> None:
        super().__init__(estimator=estimator)
        self.q_max = q_max
        self.steps = steps
        self.block_size = tuple(block_size) if block_size is not None else self.default_block
        self.variant = variant
        self.q_min = q_min
        self.ssim_loss = ssim_loss
        self.renormalize = renormalize
        self.batch_size = batch_size
        self.q_tables: torch.Tensor | None = None
        self._check_params()

    @property
    def config(self) -> VAFAConfig:
        return VAFAConfig(
            q_max=self.q_max,
            steps=self.steps,
            block=self.block_size,
            variant=self.variant,
            q_min=self.q_min,
            ssim_loss=self.ssim_loss,
            renormalize=self.renormalize,
        )

    def _check_params(self) -> None:
        self.config  # noqa: B018  (validates)
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")

    def generate(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs: Any) -> np.ndarray:
        """Adversarial volumes for ``x`` (NumPy, ``(B, 1, D, H, W)`` in [0, 1]).

        ``y`` are the label maps; None attacks the model's own prediction.
        """
        device = getattr(self.estimator, "device", torch.device("cpu"))
        x_t = torch.from_numpy(np.asarray(x, dtype=np.float32)).to(device)
        if y is None:
            y = np.asarray(self.estimator.predict(x)).argmax(axis=1)
        y_t = torch.from_numpy(np.asarray(y)).to(device)
        return self.generate_tensor(x_t, y_t).cpu().numpy()

    def generate_tensor(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The torch path: tensors on the estimator's device in and out, no host round trip
        when the estimator offers ``loss_and_gradient`` (medbench's segmentation estimator)."""
        config = self.config
        outputs, tables = [], []
        for start in range(0, x.shape[0], self.batch_size):
            result = vafa(
                self._gradient, x[start : start + self.batch_size], y[start : start + self.batch_size], config
            )
            outputs.append(result.x_adv)
            tables.append(result.q)
        self.q_tables = torch.cat(tables)
        return torch.cat(outputs)

    def _gradient(self, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if hasattr(self.estimator, "loss_and_gradient"):
            return self.estimator.loss_and_gradient(x_adv, y)[1]
        gradient = self.estimator.loss_gradient(x_adv.cpu().numpy(), y.cpu().numpy())
        return torch.as_tensor(gradient, device=x_adv.device)


class VAFA2D(VAFA):
    """Slice-wise VAFA: a 2D DCT on blocks of each axial slice; the reference's defaults are
    10 steps, ``q_max`` 20 and no SSIM term."""

    default_block = (8, 8)

    def __init__(
        self,
        estimator: Any,
        q_max: float = 20.0,
        steps: int = 10,
        block_size: tuple[int, ...] | None = None,
        variant: Variant = "paper",
        q_min: float = 5.0,
        ssim_loss: bool = False,
        renormalize: bool = True,
        batch_size: int = 1,
    ) -> None:
        super().__init__(
            estimator, q_max, steps, block_size, variant, q_min, ssim_loss, renormalize, batch_size
        )
