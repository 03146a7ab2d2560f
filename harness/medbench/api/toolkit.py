"""The helpers of the core that plugins may use: the one supported import path for them.

Plugins import the base classes from :mod:`medbench.api`, :data:`medbench.hookimpl` from
:mod:`medbench`, and everything else they need from the core from here::

    from medbench.api.toolkit import CellError, input_gradient, pgd_linf

Everything else in the core (``medbench.wrapping``, ``medbench.building``,
``medbench.measuring``, ...) is internal: it may move or change between releases without
notice. This module is not imported by :mod:`medbench.api` nor by the core itself.

The groups:

Errors:
    :class:`UsageError` (bad usage or bad input, e.g. a setting or a missing file: one line
    on stderr, exit code 2) and :class:`CellError` (a failure inside one cell, e.g. an attack
    given data it cannot attack: the cell is marked FAILED and the matrix goes on), and
    :func:`first_line` (an error's first line, for one-line messages).

Estimators (attacks):
    :func:`art_labels` (labels as the ART estimator takes them), :func:`input_gradient`
    (the estimator's loss gradient in torch, defences, BPDA and EOT included),
    :func:`predict_logits` (batched logits in torch) and :func:`counting_queries` (counts the
    model queries of a black-box attack, for :class:`~medbench.api.AttackResult` totals).

Forward pass (defenses):
    :func:`normalize` (applies a model's :class:`~medbench.api.Normalization`) and
    :func:`defended_logits` (a defended model's logits for [0, 1] input: its preprocessing
    defences, normalisation, model; for training loops without an ART estimator).

Preprocessing defences:
    :class:`DefensePreprocessor` (the ART preprocessor a preprocessing defense returns) and
    :data:`GradientMode` (``"bpda"`` or ``"blocked"``: what attacks get as its gradient).

Training:
    :func:`default_loss` (the task's loss: cross-entropy, BCE for multi-label data, Dice+CE
    for segmentation; a :data:`Criterion`), :func:`dice_ce_loss` (the segmentation loss),
    :func:`pgd_linf` (a torch L∞ PGD for adversarial training and denoiser training, the
    steps of ART's), with its parts :func:`linf_iterations` (the projected signed steps) and
    :func:`random_start` (ART's L∞ random start from a torch generator).

Files:
    :func:`file_sha256` (the hex SHA-256 of a file, e.g. to check downloaded weights).
"""

from medbench.building.cache import file_sha256
from medbench.building.pgd import linf_iterations, pgd_linf, random_start
from medbench.building.training import Criterion, default_loss
from medbench.errors import CellError, UsageError, first_line
from medbench.measuring.segmentation_metrics import dice_ce_loss
from medbench.wrapping.bpda import DefensePreprocessor, GradientMode
from medbench.wrapping.estimators import art_labels, input_gradient, predict_logits
from medbench.wrapping.forward import defended_logits, normalize
from medbench.wrapping.queries import counting_queries

__all__ = [
    "CellError",
    "Criterion",
    "DefensePreprocessor",
    "GradientMode",
    "UsageError",
    "art_labels",
    "counting_queries",
    "default_loss",
    "defended_logits",
    "dice_ce_loss",
    "file_sha256",
    "first_line",
    "input_gradient",
    "linf_iterations",
    "normalize",
    "pgd_linf",
    "predict_logits",
    "random_start",
]
