"""An ART estimator for segmentation networks, and patch-wise attacks on large volumes.

ART has no segmentation estimator: its ``PyTorchClassifier`` checks labels as ``(N,)`` or
one-hot ``(N, K)`` and its ``PyTorchRegressor`` flattens outputs. :class:`SegmentationEstimator`
subclasses ART's ``PyTorchEstimator`` *without* ``ClassifierMixin``, so ART's FGSM, BIM, PGD
and MI-FGSM take their non-classifier path: labels (dense class maps) are passed through as
they are, and every step calls :meth:`SegmentationEstimator.loss_gradient` (Dice+CE).

Networks built for a fixed patch size (UNETR) see volumes of that size only: attacks run
patch by patch over a grid of non-overlapping patches (:func:`attack_patchwise`, as paper
003's reference code does) and predictions of whole volumes use MONAI's sliding-window
inference (:meth:`SegmentationEstimator.predict_logits`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from art.estimators.pytorch import PyTorchEstimator

from medbench.api import DefendedModel
from medbench.measuring.segmentation_metrics import dice_ce_loss
from medbench.wrapping.forward import defended_logits

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class SegmentationEstimator(PyTorchEstimator):
    """ART estimator around a defended segmentation model (2D or 3D).

    Inputs are ``(N, C, *spatial)`` in [0, 1] (``clip_values=(0, 1)``); the defended model's
    preprocessing defences and normalisation are applied inside the forward pass, on the
    device, so that gradients flow through them. Labels are class maps ``(N, *spatial)``
    (or ``(N, 1, *spatial)``); ``y=None`` in an ART attack means "the model's own prediction".

    Args:
        defended: The defended model.
        nb_classes: Output classes (K, background included).
        input_shape: ``(C, *spatial)`` of one input patch.
        device: Where the model runs.
        roi_size: Patch size the network is built for; None when any size works. Larger
            inputs are predicted with a sliding window.
        loss: ``(logits, labels) -> scalar`` ascended by the attacks (Dice+CE).
        sw_batch_size: Windows per forward pass of the sliding-window inference.
        overlap: Overlap of neighbouring windows (0.5, the reference's ``infer_overlap``).
    """

    estimator_params = [*PyTorchEstimator.estimator_params, "nb_classes"]

    def __init__(
        self,
        defended: DefendedModel,
        *,
        nb_classes: int,
        input_shape: Sequence[int],
        device: torch.device,
        roi_size: Sequence[int] | None = None,
        loss: LossFn = dice_ce_loss,
        sw_batch_size: int = 4,
        overlap: float = 0.5,
    ) -> None:
        super().__init__(
            model=defended.model,
            clip_values=(0.0, 1.0),
            preprocessing=None,
            channels_first=True,
            device_type="gpu" if device.type == "cuda" else "cpu",
        )
        self._device = device
        self.defended = defended
        self.nb_classes = nb_classes
        self._input_shape = tuple(input_shape)
        self.roi_size = tuple(roi_size) if roi_size is not None else None
        self.loss = loss
        self.sw_batch_size = sw_batch_size
        self.overlap = overlap
        defended.to(device).eval()

    # ------------------------------------------------------------------ torch interface

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self._input_shape

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable logits of a patch (or any size the network accepts)."""
        return defended_logits(self.defended, x)

    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of whole inputs without gradients: one pass when ``x`` fits the network's
        patch size, MONAI's sliding-window inference otherwise."""
        with torch.no_grad():
            if not self.needs_window(x):
                return self.logits(x)
            from monai.inferers import sliding_window_inference

            assert self.roi_size is not None
            result = sliding_window_inference(
                x, self.roi_size, self.sw_batch_size, self.logits, overlap=self.overlap, mode="constant"
            )
            return result if isinstance(result, torch.Tensor) else torch.as_tensor(result)

    def predict_labels(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted class maps ``(N, *spatial)`` (argmax of :meth:`predict_logits`)."""
        return self.predict_logits(x).argmax(dim=1)

    def needs_window(self, x: torch.Tensor) -> bool:
        return self.roi_size is not None and tuple(x.shape[2:]) != self.roi_size

    def loss_and_gradient(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss and its gradient with respect to ``x`` (torch tensors on the device)."""
        x = x.detach().requires_grad_(True)
        loss = self.loss(self.logits(x), self._labels(y, x))
        (gradient,) = torch.autograd.grad(loss, x)
        return loss.detach(), gradient

    def _labels(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Class maps from class maps, ``(N, 1, ...)`` maps, or scores ``(N, K, ...)`` (argmax)."""
        if y.is_floating_point() and y.ndim == x.ndim and y.shape[1] == self.nb_classes and y.shape[1] > 1:
            return y.argmax(dim=1)
        return y.long()

    # ------------------------------------------------------------------ ART interface

    def loss_gradient(self, x: Any, y: Any, **kwargs: Any) -> Any:
        """Gradient of the loss with respect to ``x``; NumPy in, NumPy out (torch in, torch out)."""
        is_numpy = isinstance(x, np.ndarray)
        x_t = self._tensor(x)
        y_t = self._tensor(y)
        _, gradient = self.loss_and_gradient(x_t, y_t)
        return gradient.cpu().numpy() if is_numpy else gradient

    def compute_loss(self, x: Any, y: Any, **kwargs: Any) -> np.ndarray:
        with torch.no_grad():
            x_t = self._tensor(x)
            loss = self.loss(self.logits(x_t), self._labels(self._tensor(y), x_t))
        return np.asarray(float(loss))

    def predict(self, x: np.ndarray, batch_size: int = 8, **kwargs: Any) -> np.ndarray:
        """Logits ``(N, K, *spatial)`` as NumPy (ART's contract)."""
        outputs = [
            self.predict_logits(self._tensor(x[start : start + batch_size])).cpu().numpy()
            for start in range(0, len(x), batch_size)
        ]
        return np.concatenate(outputs) if outputs else np.zeros((0, self.nb_classes), dtype=np.float32)

    def fit(
        self, x: np.ndarray, y: np.ndarray, batch_size: int = 2, nb_epochs: int = 1, **kwargs: Any
    ) -> None:
        """Train with Adam (lr ``kwargs['lr']``, default 1e-4) on the estimator's loss."""
        parameters = [p for p in self.defended.model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(parameters, lr=float(kwargs.get("lr", 1e-4)))
        self.defended.model.train()
        for _ in range(nb_epochs):
            for start in range(0, len(x), batch_size):
                x_t = self._tensor(x[start : start + batch_size])
                y_t = self._labels(self._tensor(y[start : start + batch_size]), x_t)
                optimizer.zero_grad(set_to_none=True)
                self.loss(self.logits(x_t), y_t).backward()
                optimizer.step()
        self.defended.model.eval()

    def get_activations(
        self, x: np.ndarray, layer: int | str, batch_size: int = 8, framework: bool = False
    ) -> Any:
        """Outputs of the submodule named ``layer`` (``model.named_modules()`` name or index)."""
        modules = dict(self.defended.model.named_modules())
        names = list(modules)
        name = names[layer] if isinstance(layer, int) else layer
        if name not in modules:
            raise ValueError(f"no layer {layer!r}; layers: {', '.join(n for n in names if n)}")
        captured: list[torch.Tensor] = []
        handle = modules[name].register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            with torch.set_grad_enabled(framework):
                for start in range(0, len(x), batch_size):
                    self.logits(self._tensor(x[start : start + batch_size]))
        finally:
            handle.remove()
        result = torch.cat(captured)
        return result if framework else result.detach().cpu().numpy()

    def _tensor(self, value: Any) -> torch.Tensor:
        if isinstance(value, torch.Tensor):
            return value.to(self._device)
        array = np.asarray(value)
        tensor = torch.from_numpy(array.astype(np.float32) if array.dtype == np.float64 else array)
        return tensor.to(self._device)


# --------------------------------------------------------------------------- patch-wise attacks


def pad_to_size(x: torch.Tensor, y: torch.Tensor, size: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad inputs ``(N, C, *spatial)`` and labels ``(N, *spatial)`` at the end of every
    axis shorter than ``size`` (padding is background, label 0)."""
    padding = [max(int(r) - s, 0) for s, r in zip(x.shape[2:], size, strict=True)]
    if not any(padding):
        return x, y
    pad = [value for amount in reversed(padding) for value in (0, amount)]
    return F.pad(x, pad), F.pad(y, pad)


PatchAttack = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(x_patches, y_patches) -> x_adv_patches`` on a batch of patches."""


def attack_patchwise(
    attack: PatchAttack, x: torch.Tensor, y: torch.Tensor, roi: Sequence[int], patches_per_batch: int = 6
) -> torch.Tensor:
    """Attack inputs larger than the network's patch size one grid of patches at a time.

    As paper 003's reference code: the volume is cut into non-overlapping ``roi`` patches
    (MONAI's ``dense_patch_slices`` with a scan interval equal to the patch, the last patch
    moved back to fit, so it may overlap), the patches are attacked in batches of
    ``patches_per_batch`` and written back in order (a later patch overwrites). Every voxel of
    the result comes from exactly one attacked patch, so a per-voxel budget (L∞) still holds.
    Inputs smaller than ``roi`` on an axis are zero-padded for the attack and cropped back.

    Args:
        attack: Crafts adversarial patches for a batch of patches and their labels.
        x: Inputs ``(N, C, *spatial)``.
        y: Class maps ``(N, *spatial)``.
        roi: Patch size.
        patches_per_batch: Patches per call of ``attack`` (6 in the reference).
    """
    from monai.data.utils import dense_patch_slices

    spatial = tuple(x.shape[2:])
    roi = tuple(int(r) for r in roi)
    if spatial == roi:
        return attack(x, y)
    x_padded, y_padded = pad_to_size(x, y, roi)
    if x_padded.shape != x.shape:
        result = attack_patchwise(attack, x_padded, y_padded, roi, patches_per_batch)
        crop: tuple[Any, ...] = (..., *[slice(0, s) for s in spatial])
        return result[crop]
    windows: list[tuple[Any, ...]] = [tuple(w) for w in dense_patch_slices(spatial, roi, roi)]
    adversarial = x.clone()
    for sample in range(x.shape[0]):
        for start in range(0, len(windows), patches_per_batch):
            chunk = windows[start : start + patches_per_batch]
            x_patches = torch.stack([x[(sample, slice(None), *window)] for window in chunk])
            y_patches = torch.stack([y[(sample, *window)] for window in chunk])
            x_adv_patches = attack(x_patches, y_patches)
            for window, patch in zip(chunk, x_adv_patches, strict=True):
                adversarial[(sample, slice(None), *window)] = patch
    return adversarial
