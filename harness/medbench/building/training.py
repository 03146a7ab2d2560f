"""The training loop every training defense shares (standard, adversarial, custom losses)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import DataLoader

from medbench.api import DatasetBundle, DefendedModel
from medbench.config.spec import TrainingSettings
from medbench.errors import CellError
from medbench.measuring.metrics import auc_from_logits
from medbench.measuring.segmentation_metrics import dice_ce_loss, dice_per_class, image_means, mean_defined
from medbench.wrapping.forward import defended_logits
from medbench.wrapping.segmentation import SegmentationEstimator, pad_to_size

Perturb = Callable[[DefendedModel, torch.Tensor, torch.Tensor], torch.Tensor]
LossFn = Callable[[DefendedModel, torch.Tensor, torch.Tensor], torch.Tensor]
EpochCallback = Callable[[int, int, float, float], None]
"""``(epoch, epochs, train_loss, val_score)`` after each epoch."""
Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class TrainingHistory:
    """Loss and validation accuracy per epoch."""

    train_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    """The validation score per epoch: accuracy (classification) or mean Dice (segmentation)."""
    best_epoch: int | None = None
    """The epoch whose weights were kept (``keep_best``), counted from 1."""


def default_loss(dataset: DatasetBundle) -> Criterion:
    """Cross-entropy, BCE-with-logits for multi-label data, Dice+CE for segmentation."""
    if dataset.task == "segmentation":
        return dice_ce_loss
    return nn.BCEWithLogitsLoss() if dataset.multilabel else nn.CrossEntropyLoss()


def evaluate_validation(
    defended: DefendedModel,
    dataset: DatasetBundle,
    device: torch.device,
    roi_size: tuple[int, ...] | None = None,
) -> float:
    """The score that picks the best epoch: clean accuracy, mean AUC for multi-label data
    (exact-match accuracy over many findings is near 0 for most of training, and the papers
    select and report by AUC), or mean Dice for segmentation."""
    if dataset.multilabel:
        return evaluate_mean_auc(defended, dataset, "val", device)
    if dataset.task != "segmentation":
        return evaluate_accuracy(defended, dataset, "val", device)

    estimator = SegmentationEstimator(
        defended,
        nb_classes=dataset.num_classes,
        input_shape=dataset.input_shape,
        device=device,
        roi_size=roi_size,
    )
    scores = []
    for index in range(len(dataset.val)):  # type: ignore[arg-type]
        image, label = dataset.val[index]
        prediction = estimator.predict_labels(torch.as_tensor(image)[None].to(device))
        labels = torch.as_tensor(label)[None].to(device)
        scores.append(image_means(dice_per_class(prediction, labels, dataset.num_classes)).cpu())
    return mean_defined(torch.cat(scores)) if scores else float("nan")


def fit_to_roi(
    x: torch.Tensor, y: torch.Tensor, roi_size: tuple[int, ...] | None, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random ``roi_size`` crop of a segmentation batch (zero-padded where it is smaller).

    Networks built for one input size (UNETR) train on patches of that size; the whole batch
    shares one crop position.
    """
    if roi_size is None or tuple(x.shape[2:]) == tuple(roi_size):
        return x, y
    x, y = pad_to_size(x, y, roi_size)
    starts = [
        int(torch.randint(0, size - r + 1, (1,), generator=generator))
        for size, r in zip(x.shape[2:], roi_size, strict=True)
    ]
    window = tuple(slice(start, start + r) for start, r in zip(starts, roi_size, strict=True))
    return x[(slice(None), slice(None), *window)], y[(slice(None), *window)]


def evaluate_accuracy(
    defended: DefendedModel, dataset: DatasetBundle, split: str, device: torch.device, batch_size: int = 256
) -> float:
    """Clean accuracy on a split (``val`` or ``test``); NaN for an empty split."""
    loader = DataLoader(getattr(dataset, split), batch_size=batch_size, shuffle=False)
    defended.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            logits = defended_logits(defended, x.to(device))
            y = y.to(device)
            if dataset.multilabel:
                correct += int(((logits > 0) == (y > 0.5)).all(dim=1).sum())
            else:
                correct += int((logits.argmax(dim=1) == y).sum())
            total += y.shape[0]
    return correct / total if total else float("nan")


def evaluate_mean_auc(
    defended: DefendedModel, dataset: DatasetBundle, split: str, device: torch.device, batch_size: int = 256
) -> float:
    """Multi-label: mean over labels of the clean ROC AUC on a split (labels with one class are
    skipped); NaN when no label is defined."""
    loader = DataLoader(getattr(dataset, split), batch_size=batch_size, shuffle=False)
    defended.eval()
    logits, labels = [], []
    with torch.no_grad():
        for x, y in loader:
            logits.append(defended_logits(defended, x.to(device)))
            labels.append(y.to(device))
    if not logits:
        return float("nan")
    return auc_from_logits(torch.cat(logits), torch.cat(labels), multilabel=True)


def train_defended(
    defended: DefendedModel,
    dataset: DatasetBundle,
    settings: TrainingSettings,
    device: torch.device,
    seed: int,
    *,
    perturb: Perturb | None = None,
    loss: LossFn | None = None,
    parameters: list[nn.Parameter] | None = None,
    on_epoch: EpochCallback | None = None,
    roi_size: tuple[int, ...] | None = None,
) -> TrainingHistory:
    """Train ``defended`` in place with Adam on the training split.

    Args:
        defended: The model (and extra modules) to train; moved to ``device``.
        dataset: Its ``train`` split is used for training, ``val`` for the per-epoch accuracy.
        settings: Epochs, batch size, learning rate, weight decay.
        device: Where to train.
        seed: Seeds the shuffling (and any randomness of ``perturb``).
        perturb: ``(defended, x, y) -> x'`` applied to every batch with the modules in eval
            mode (adversarial training); must return values in [0, 1].
        loss: ``(defended, x, y) -> scalar`` replacing the default loss on the batch.
        parameters: What to optimise (default: everything in the model and extra modules).
        on_epoch: Progress callback.
        roi_size: Segmentation: the patch size the network takes; batches are randomly
            cropped to it and validation volumes predicted with a sliding window.

    Raises:
        CellError: The loss became NaN or infinite.
    """
    defended.to(device)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset.train, batch_size=settings.batch_size, shuffle=True, generator=generator)
    everything = _all_parameters(defended)
    if parameters is None:
        parameters = everything
    trainable = [p for p in parameters if p.requires_grad]
    if not trainable:
        raise CellError("nothing to train: every parameter is frozen")
    with _frozen_outside(defended, everything, trainable):
        return _train(
            defended, dataset, settings, device, loader, trainable, perturb, loss, on_epoch, roi_size, seed
        )


def _train(
    defended: DefendedModel,
    dataset: DatasetBundle,
    settings: TrainingSettings,
    device: torch.device,
    loader: DataLoader,
    trainable: list[nn.Parameter],
    perturb: Perturb | None,
    loss: LossFn | None,
    on_epoch: EpochCallback | None,
    roi_size: tuple[int, ...] | None,
    seed: int,
) -> TrainingHistory:
    frozen = _frozen_submodules(defended, {id(p) for p in trainable})
    crops = torch.Generator().manual_seed(seed + 1)
    optimizer = torch.optim.Adam(trainable, lr=settings.lr, weight_decay=settings.weight_decay)
    criterion = default_loss(dataset)
    history = TrainingHistory()
    best: tuple[float, dict[str, dict[str, torch.Tensor]]] | None = None
    for epoch in range(settings.epochs):
        total_loss: torch.Tensor | float = 0.0
        batches = 0
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if dataset.task == "segmentation":
                x, y = fit_to_roi(x, y, roi_size, crops)
            if perturb is not None:
                defended.eval()
                x = perturb(defended, x, y).detach()
            _set_train(defended, frozen)
            optimizer.zero_grad(set_to_none=True)
            value = loss(defended, x, y) if loss is not None else criterion(defended_logits(defended, x), y)
            value.backward()
            optimizer.step()
            # summed on the device: no host synchronisation per step
            total_loss = total_loss + value.detach()
            batches += 1
        mean_loss = float(total_loss) / max(batches, 1)
        if not math.isfinite(mean_loss):
            value_text = "NaN" if math.isnan(mean_loss) else "infinite"
            raise CellError(f"training diverged: the loss became {value_text} in epoch {epoch + 1}")
        history.train_loss.append(mean_loss)
        history.val_accuracy.append(evaluate_validation(defended, dataset, device, roi_size))
        accuracy = history.val_accuracy[-1]
        if settings.keep_best and not math.isnan(accuracy) and (best is None or accuracy >= best[0]):
            best = (accuracy, _copy_states(defended))
        if on_epoch is not None:
            on_epoch(epoch + 1, settings.epochs, history.train_loss[-1], history.val_accuracy[-1])
    if best is not None:
        defended.load_state_dicts(best[1])
        history.best_epoch = max(i + 1 for i, acc in enumerate(history.val_accuracy) if acc == best[0])
    defended.eval()
    return history


def _copy_states(defended: DefendedModel) -> dict[str, dict[str, torch.Tensor]]:
    return {
        name: {k: v.detach().clone() for k, v in state.items()}
        for name, state in defended.state_dicts().items()
    }


def _all_parameters(defended: DefendedModel) -> list[nn.Parameter]:
    parameters = list(defended.model.parameters())
    for module in defended.modules.values():
        parameters.extend(module.parameters())
    return parameters


@contextmanager
def _frozen_outside(
    defended: DefendedModel, everything: list[nn.Parameter], trainable: list[nn.Parameter]
) -> Iterator[None]:
    """Stop gradients of the parameters that are not trained (no ``.grad`` builds up on a
    frozen base model), then restore their flags."""
    kept = {id(p) for p in trainable}
    frozen = [p for p in everything if id(p) not in kept and p.requires_grad]
    for parameter in frozen:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter in frozen:
            parameter.requires_grad_(True)


def _frozen_submodules(defended: DefendedModel, trainable_ids: set[int]) -> list[nn.Module]:
    """The largest submodules that have parameters but none of them trained (computed once)."""
    frozen: list[nn.Module] = []
    covered: set[int] = set()
    for root in [defended.model, *defended.modules.values()]:
        for module in root.modules():
            if id(module) in covered:
                continue
            own = list(module.parameters())
            if own and not any(id(p) in trainable_ids for p in own):
                frozen.append(module)
                covered.update(id(m) for m in module.modules())
    return frozen


def _set_train(defended: DefendedModel, frozen: list[nn.Module]) -> None:
    """Training mode for the parts being trained; eval mode for the frozen submodules, so that
    a frozen part keeps its BatchNorm statistics and runs without dropout (a denoiser trained
    in front of a fixed classifier, a frozen backbone)."""
    defended.model.train()
    for module in defended.modules.values():
        module.train()
    for module in frozen:
        module.eval()  # recursive: a frozen subtree's dropout is off too
