"""The plugin contract: base classes for attacks, defenses, datasets, models and metrics.

A plugin registers *instances* of these classes (see :mod:`medbench.plugins.hookspecs`). Each
class declares its metadata as class attributes and its tunable parameters as a
``Settings`` dataclass whose fields all have defaults; the harness builds one object per
configuration with :meth:`Plugin.configured`.

Conventions every plugin relies on (DESIGN.md §2, §7):

* Images are float tensors in **[0, 1]**, channels first: ``(N, C, H, W)`` in 2D,
  ``(N, C, D, H, W)`` in 3D (depth, i.e. axial slices, first). Budgets are on that scale (``8/255``).
* Normalisation (mean/std) belongs to the model, not to the data.
* Classification labels are ``int64`` class indices of shape ``(N,)``; segmentation labels
  are ``int64`` class maps ``(N, *spatial)`` with class 0 the background.
"""

from medbench.api.attacks import Attack, AttackResult, CellOutputs, Metric
from medbench.api.data import Dataset, DatasetBundle
from medbench.api.defenses import DefendedModel, Defense, DefenseContext
from medbench.api.models import Model, Normalization
from medbench.api.plugin import (
    ALL_TASKS,
    CLASSIFICATION,
    SEGMENTATION,
    DefenseKind,
    Plugin,
    Task,
    ThreatModel,
)

__all__ = [
    "ALL_TASKS",
    "CLASSIFICATION",
    "SEGMENTATION",
    "Attack",
    "AttackResult",
    "CellOutputs",
    "Dataset",
    "DatasetBundle",
    "DefendedModel",
    "Defense",
    "DefenseContext",
    "DefenseKind",
    "Metric",
    "Model",
    "Normalization",
    "Plugin",
    "Task",
    "ThreatModel",
]
