"""How a cell is evaluated, per task: the estimator, clean outputs, crafting, metrics, pictures.

The matrix runner (:mod:`medbench.engine.runner`) is task-agnostic; it asks a :class:`TaskEvaluator`
for everything that differs between classification and segmentation:

* classification wraps the model in ART's ``PyTorchClassifier`` and scores logits;
* segmentation wraps it in :class:`~medbench.wrapping.segmentation.SegmentationEstimator`, attacks
  volumes larger than the network's patch size patch by patch, predicts whole volumes with a
  sliding window, and scores Dice and HD95 per image.

Evaluation data come as batches of equally shaped samples (:func:`eval_batches`): volumes of a
NIfTI folder differ in size, so a batch holds consecutive volumes of one shape.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from medbench.api import Attack, AttackResult, DatasetBundle, DefendedModel
from medbench.measuring.chance import balanced_accuracy, majority_rate
from medbench.measuring.metrics import classification_metrics, multilabel_metrics, perturbation_norms, ssim
from medbench.measuring.per_sample import (
    Samples,
    classification_samples,
    concatenate,
    perturbation,
    segmentation_samples,
)
from medbench.measuring.segmentation_metrics import dice_per_class, hd95_per_class, image_means, mean_defined
from medbench.reporting.images import example_grid, image_rows, label_colors, perturbation_image
from medbench.wrapping.acceleration import Acceleration, accelerate
from medbench.wrapping.estimators import classifier_estimator, predict_logits
from medbench.wrapping.segmentation import SegmentationEstimator, attack_patchwise

Batch = tuple[torch.Tensor, torch.Tensor]


def as_attack_result(generated: torch.Tensor | AttackResult) -> AttackResult:
    """What :meth:`~medbench.api.Attack.generate` returned, as an :class:`AttackResult`."""
    return generated if isinstance(generated, AttackResult) else AttackResult(generated)


def eval_batches(bundle: DatasetBundle, n_eval: int, batch_size: int, device: torch.device) -> list[Batch]:
    """The first ``n_eval`` test samples as batches of at most ``batch_size`` equally shaped samples."""
    batches: list[Batch] = []
    pending: list[tuple[torch.Tensor, torch.Tensor]] = []

    def flush() -> None:
        if pending:
            x = torch.stack([item[0] for item in pending]).float().to(device)
            y = torch.stack([torch.as_tensor(item[1]) for item in pending]).to(device)
            batches.append((x, y))
            pending.clear()

    for index in range(n_eval):
        image, label = bundle.test[index]
        image = torch.as_tensor(image)
        if pending and (len(pending) == batch_size or pending[0][0].shape != image.shape):
            flush()
        pending.append((image, torch.as_tensor(label)))
    flush()
    return batches


@dataclass
class CleanOutputs:
    """Model outputs on the clean batches, and the clean scores derived from them."""

    outputs: list[torch.Tensor]
    scores: dict[str, float] = field(default_factory=dict)
    per_class: dict[str, torch.Tensor] = field(default_factory=dict)
    """Segmentation: the clean Dice and HD95 per volume and class (``dice``, ``hd95``)."""


class TaskEvaluator(ABC):
    """Everything about evaluating a cell that depends on the task."""

    def __init__(
        self,
        bundle: DatasetBundle,
        device: torch.device,
        roi_size: tuple[int, ...] | None,
        acceleration: Acceleration | None = None,
    ) -> None:
        self.bundle = bundle
        self.device = device
        self.roi_size = roi_size
        self.acceleration = acceleration
        """bf16 autocast, channels-last, ``torch.compile`` (:mod:`medbench.wrapping.acceleration`)."""

    @abstractmethod
    def estimator(self, defended: DefendedModel) -> Any:
        """The ART estimator that attacks receive."""

    @abstractmethod
    def clean_outputs(self, estimator: Any, batches: list[Batch]) -> CleanOutputs:
        """Model outputs on the clean batches, computed once per defended model."""

    def craft(
        self, attack: Attack, estimator: Any, x: torch.Tensor, y: torch.Tensor, budget: float, seed: int
    ) -> AttackResult:
        """Adversarial inputs for one batch, with the attack's counts (queries)."""
        return as_attack_result(attack.generate(estimator, x, y, budget, seed=seed))

    @abstractmethod
    def adversarial_outputs(self, estimator: Any, x_adv: torch.Tensor) -> torch.Tensor:
        """Model outputs on one adversarial batch."""

    @abstractmethod
    def measure(
        self,
        batches: list[Batch],
        adversarial: list[torch.Tensor],
        clean: CleanOutputs,
        attacked: list[torch.Tensor],
    ) -> tuple[dict[str, float], Samples]:
        """The cell's metrics (all but ``seconds``) and its per-sample outcomes without ids
        (:mod:`medbench.measuring.per_sample`), computed together: the slow parts (SSIM, HD95)
        once for both."""

    @abstractmethod
    def examples(
        self, batch: Batch, x_adv: torch.Tensor, clean: torch.Tensor, attacked: torch.Tensor, path: Path
    ) -> Path:
        """Save the cell's example grid as PNG."""


def add_totals(into: dict[str, float], totals: dict[str, float]) -> None:
    """Add an attack's counts (queries) to a running sum, in place."""
    for name, value in totals.items():
        into[name] = into.get(name, 0.0) + float(value)


def _out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower()
    )


def craft_splitting_on_oom(
    evaluator: TaskEvaluator,
    attack: Attack,
    estimator: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    budget: float,
    seed: int,
    on_split: Callable[[int], None] | None = None,
) -> AttackResult:
    """:meth:`TaskEvaluator.craft`, retried on halves of the batch when the device runs out of memory.

    The halves are attacked one after the other (recursively, down to single samples), with
    their own seeds, so random starts differ from an unsplit run; the budget and the range
    are unaffected. ``on_split(size)`` is told the size of each batch that had to be split.
    """
    try:
        return evaluator.craft(attack, estimator, x, y, budget, seed)
    except Exception as error:
        if not _out_of_memory(error) or len(x) < 2:
            raise
    if x.device.type == "cuda":
        torch.cuda.empty_cache()
    if on_split is not None:
        on_split(len(x))
    half = len(x) // 2
    parts = [
        craft_splitting_on_oom(evaluator, attack, estimator, x[:half], y[:half], budget, seed, on_split),
        craft_splitting_on_oom(
            evaluator, attack, estimator, x[half:], y[half:], budget, seed + 7919, on_split
        ),
    ]
    totals: dict[str, float] = {}
    for part in parts:
        add_totals(totals, part.totals)
    return AttackResult(torch.cat([part.x_adv for part in parts]), totals)


class ClassificationEvaluator(TaskEvaluator):
    """Accuracy, attack success, AUC, perturbation size and SSIM on logits."""

    def __init__(
        self,
        bundle: DatasetBundle,
        device: torch.device,
        roi_size: tuple[int, ...] | None,
        batch_size: int,
        eot_samples: int = 1,
        acceleration: Acceleration | None = None,
    ) -> None:
        super().__init__(bundle, device, roi_size, acceleration)
        self.batch_size = batch_size
        self.eot_samples = eot_samples

    def estimator(self, defended: DefendedModel) -> Any:
        return classifier_estimator(defended, self.bundle, self.device, self.eot_samples, self.acceleration)

    def clean_outputs(self, estimator: Any, batches: list[Batch]) -> CleanOutputs:
        return CleanOutputs([predict_logits(estimator, x, self.batch_size) for x, _ in batches])

    def adversarial_outputs(self, estimator: Any, x_adv: torch.Tensor) -> torch.Tensor:
        return predict_logits(estimator, x_adv, self.batch_size)

    def measure(
        self,
        batches: list[Batch],
        adversarial: list[torch.Tensor],
        clean: CleanOutputs,
        attacked: list[torch.Tensor],
    ) -> tuple[dict[str, float], Samples]:
        labels, clean_logits, adv_logits = (
            torch.cat([y for _, y in batches]),
            torch.cat(clean.outputs),
            torch.cat(attacked),
        )
        x, x_adv = torch.cat([x for x, _ in batches]), torch.cat(adversarial)
        multilabel = self.bundle.multilabel
        per_sample_ssim = ssim(x, x_adv)
        metrics = classification_metrics(
            labels, clean_logits, adv_logits, x, x_adv, multilabel, per_sample_ssim=per_sample_ssim
        )
        if multilabel:
            metrics.update(multilabel_metrics(labels, clean_logits, adv_logits, self.bundle.class_names))
        else:  # the chance levels a classifier has to beat (measuring.sanity, clean-at-chance)
            metrics["majority_rate"] = majority_rate(labels)
            metrics["clean_balanced_accuracy"] = balanced_accuracy(clean_logits, labels)
        samples = classification_samples(
            labels, clean_logits, adv_logits, x, x_adv, multilabel, with_ssim=False
        )
        samples["ssim"] = per_sample_ssim.detach().cpu().numpy().astype("float32")
        return metrics, samples

    def examples(
        self, batch: Batch, x_adv: torch.Tensor, clean: torch.Tensor, attacked: torch.Tensor, path: Path
    ) -> Path:
        return example_grid(batch[0], x_adv, path)


def _mean_of_images(per_class: torch.Tensor) -> float:
    """A cell's score: the mean over volumes of each volume's NaN-mean over its classes."""
    return mean_defined(image_means(per_class))


class SegmentationEvaluator(TaskEvaluator):
    """Dice and HD95 (MONAI's reference settings), perturbation size, SSIM and LPIPS similarity.

    Clean Dice and HD95 are computed once per defended model (HD95's distance transforms
    are the slow part) and reused by every cell.
    """

    def __init__(
        self,
        bundle: DatasetBundle,
        device: torch.device,
        roi_size: tuple[int, ...] | None,
        lpips: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        acceleration: Acceleration | None = None,
    ) -> None:
        super().__init__(bundle, device, roi_size, acceleration)
        self.lpips = lpips

    def estimator(self, defended: DefendedModel) -> Any:
        patch = self.roi_size or tuple(self.bundle.input_shape[1:])
        input_shape = (self.bundle.in_channels, *patch)
        if self.acceleration is not None and self.acceleration.wraps_model:
            defended.model.to(self.device)
            model = accelerate(defended.model, self.acceleration, self.device, input_shape)
            defended = dataclasses.replace(defended, model=model)
        return SegmentationEstimator(
            defended,
            nb_classes=self.bundle.num_classes,
            input_shape=input_shape,
            device=self.device,
            roi_size=self.roi_size,
        )

    def clean_outputs(self, estimator: Any, batches: list[Batch]) -> CleanOutputs:
        predictions = [estimator.predict_labels(x).to(torch.uint8) for x, _ in batches]
        dice, hd95 = self._per_class(batches, predictions)
        return CleanOutputs(
            predictions,
            {"clean_dice": _mean_of_images(dice), "clean_hd95": _mean_of_images(hd95)},
            {"dice": dice, "hd95": hd95},
        )

    def craft(
        self, attack: Attack, estimator: Any, x: torch.Tensor, y: torch.Tensor, budget: float, seed: int
    ) -> AttackResult:
        if self.roi_size is None:
            return super().craft(attack, estimator, x, y, budget, seed)
        counter = iter(range(1 << 30))
        totals: dict[str, float] = {}

        def attack_patches(patches: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            result = as_attack_result(
                attack.generate(estimator, patches, labels, budget, seed=seed + next(counter))
            )
            add_totals(totals, result.totals)
            return result.x_adv

        return AttackResult(attack_patchwise(attack_patches, x, y, self.roi_size), totals)

    def adversarial_outputs(self, estimator: Any, x_adv: torch.Tensor) -> torch.Tensor:
        return estimator.predict_labels(x_adv).to(torch.uint8)

    def measure(
        self,
        batches: list[Batch],
        adversarial: list[torch.Tensor],
        clean: CleanOutputs,
        attacked: list[torch.Tensor],
    ) -> tuple[dict[str, float], Samples]:
        adv_dice, adv_hd95 = self._per_class(batches, attacked)
        linf, l2_sum, count, ssim_values, lpips_values, norms = 0.0, 0.0, 0, [], [], []
        for (x, _), x_adv in zip(batches, adversarial, strict=True):
            batch_linf, batch_l2 = perturbation_norms(x, x_adv)
            linf = max(linf, batch_linf)
            l2_sum += batch_l2 * x.shape[0]
            count += x.shape[0]
            ssim_values.append(ssim(x, x_adv).cpu())
            norms.append(perturbation(x, x_adv, with_ssim=False))
            if self.lpips is not None:
                lpips_values.append(self.lpips(x, x_adv).cpu())
        metrics = {
            "clean_dice": clean.scores["clean_dice"],
            "robust_dice": _mean_of_images(adv_dice),
            "clean_hd95": clean.scores["clean_hd95"],
            "robust_hd95": _mean_of_images(adv_hd95),
            "linf_max": linf,
            "l2_mean": l2_sum / count if count else math.nan,
            "ssim_mean": float(torch.cat(ssim_values).mean()),
        }
        if lpips_values:
            metrics["lpips_sim"] = float(torch.cat(lpips_values).mean())
        samples = segmentation_samples(clean.per_class["dice"], adv_dice, clean.per_class["hd95"], adv_hd95)
        samples.update(concatenate(norms))
        samples["ssim"] = torch.cat(ssim_values).numpy().astype("float32")
        return metrics, samples

    def _per_class(
        self, batches: list[Batch], predictions: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Dice and HD95 per volume and class, ``(N, K)`` each, on the CPU."""
        dice, hd95 = [], []
        classes = self.bundle.num_classes
        for (_, y), prediction in zip(batches, predictions, strict=True):
            dice.append(dice_per_class(prediction.long(), y, classes).cpu())
            hd95.append(hd95_per_class(prediction.long(), y, classes).cpu())
        return torch.cat(dice), torch.cat(hd95)

    def examples(
        self, batch: Batch, x_adv: torch.Tensor, clean: torch.Tensor, attacked: torch.Tensor, path: Path
    ) -> Path:
        """Clean, adversarial, amplified perturbation, ground truth, clean and adversarial masks."""
        x, y = batch
        masks = [label_colors(mask) for mask in (y, clean, attacked)]
        return image_rows([x, x_adv, perturbation_image(x, x_adv), *masks], path)
