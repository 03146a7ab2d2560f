"""Dataset plugins and the bundle of splits they return."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from torch.utils.data import Dataset as TorchDataset

from medbench.api.plugin import Plugin, Task

if TYPE_CHECKING:
    pass


@dataclass
class DatasetBundle:
    """What a dataset plugin returns: three splits and what the harness needs to know.

    Each split is a torch ``Dataset`` whose items are ``(image, label)`` with ``image`` a
    float tensor in [0, 1] of shape ``input_shape`` and ``label`` an ``int64`` scalar
    (classification) or an ``int64`` map (segmentation).
    """

    train: TorchDataset[Any]
    val: TorchDataset[Any]
    test: TorchDataset[Any]
    class_names: tuple[str, ...]
    input_shape: tuple[int, ...]
    task: Task = "classification"
    modality: str = "unknown"
    """The imaging modality, lowercase: ``ct``, ``mri``, ``xray``, ``ultrasound``, ``dermoscopy``,
    ``synthetic-ct``... (descriptive; nothing depends on it)."""
    fingerprint: str = ""
    """A stable hash of the data and its preprocessing; changes whenever the data do."""
    multilabel: bool = False
    intensity_window: tuple[float, float] | None = None
    """The physical values that [0, 1] stands for, e.g. ``(-175.0, 250.0)`` for a CT
    window; lets users give budgets in those units (``--eps 5HU``)."""
    intensity_unit: str = ""
    """Unit of :attr:`intensity_window`: ``HU`` for CT; empty when the data has none."""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        return self.input_shape[0]


class Dataset(Plugin, ABC):
    """A dataset plugin.

    Subclasses set ``name``, ``description``, ``task``, optionally ``needs_data_dir`` and
    ``Settings``, and implement :meth:`load`.
    """

    task: ClassVar[Task] = "classification"
    dims: ClassVar[int] = 2
    needs_data_dir: ClassVar[bool] = False
    """True when the dataset reads local files given by ``--data-dir``."""
    layout: ClassVar[str] = ""
    """For file-based datasets: the expected folder layout, shown in errors and docs."""

    @property
    def kind_label(self) -> str:
        return "dataset"

    @abstractmethod
    def load(self, data_dir: Path | None, seed: int) -> DatasetBundle:
        """Load (or generate) the dataset.

        Args:
            data_dir: The folder given by ``--data-dir``; None when none was given.
            seed: Seeds the train/val/test split and any generation.

        Returns:
            The three splits with their metadata. Loading must not touch the network.

        Raises:
            UsageError: When ``data_dir`` is missing, empty or malformed; the message
                names the path and the expected layout.
        """
