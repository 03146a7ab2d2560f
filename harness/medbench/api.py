"""The plugin contract: base classes for attacks, defenses, datasets, models and metrics.

A plugin registers *instances* of these classes (see :mod:`medbench.hookspecs`). Each
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

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import nn
from torch.utils.data import Dataset as TorchDataset

from medbench.settings import NoSettings, build_settings, settings_as_dict

if TYPE_CHECKING:
    from art.estimators.estimator import BaseEstimator

Task = Literal["classification", "segmentation"]
ThreatModel = Literal["linf", "l2", "l2-minimal", "noise", "frequency"]
"""``linf`` / ``l2``: the budget bounds the perturbation's norm (the harness checks it).
``l2-minimal``: a minimal-perturbation attack (C&W L2, DeepFool): the budget is a margin, not
a bound, and the achieved L2 is the result (``l2_mean``). ``noise`` / ``frequency``: the budget
is a noise level or a quantisation step. All are checked to stay in [0, 1]."""
DefenseKind = Literal["training", "preprocessing", "wrapper"]

CLASSIFICATION: frozenset[str] = frozenset({"classification"})
SEGMENTATION: frozenset[str] = frozenset({"segmentation"})
ALL_TASKS: frozenset[str] = CLASSIFICATION | SEGMENTATION


class Plugin:
    """Common behaviour of every registered object: a name, a description, settings."""

    name: ClassVar[str]
    """Unique name users type on the command line (lowercase, dashes)."""
    description: ClassVar[str] = ""
    """One line shown by ``medbench list``."""
    Settings: ClassVar[type] = NoSettings
    """Dataclass of tunable parameters; every field needs a default."""

    def __init__(self, settings: Any | None = None) -> None:
        self.settings = settings if settings is not None else self.Settings()

    def configured(self, overrides: Mapping[str, Any] | None = None) -> Any:
        """Return a copy of this plugin object with ``overrides`` applied to its settings.

        Raises:
            UsageError: On an unknown setting or a value of the wrong type.
        """
        owner = f"{self.kind_label} {self.name!r}"
        settings = build_settings(type(self.settings), _merge(self.settings, overrides or {}), owner)
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.settings = settings
        return clone

    @property
    def kind_label(self) -> str:
        return "plugin"

    def settings_dict(self) -> dict[str, Any]:
        """The current settings as a plain dict (logged as MLflow params)."""
        return settings_as_dict(self.settings)


def _merge(settings: Any, overrides: Mapping[str, Any]) -> dict[str, Any]:
    current = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
    changed = {k: v for k, v in current.items() if v != _default_of(type(settings), k)}
    return {**changed, **overrides}


def _default_of(settings_cls: type, key: str) -> Any:
    for f in dataclasses.fields(settings_cls):
        if f.name == key:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
    return dataclasses.MISSING


# --------------------------------------------------------------------------- datasets


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


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and std that a model expects its [0, 1] input to be normalised with."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def for_channels(self, channels: int) -> Normalization:
        """Broadcast a single-channel normalisation to ``channels`` channels (or check it fits)."""
        if len(self.mean) == channels:
            return self
        if len(self.mean) == 1:
            return Normalization(self.mean * channels, self.std * channels)
        raise ValueError(f"normalisation has {len(self.mean)} channels, input has {channels}")


class Model(Plugin, ABC):
    """A model plugin: a factory of ``torch.nn.Module`` objects.

    The module takes **normalised** input (see :meth:`normalization`) and returns logits:
    ``(N, num_classes)`` for classification, ``(N, num_classes, *spatial)`` for segmentation.
    """

    tasks: ClassVar[frozenset[str]] = CLASSIFICATION
    dims: ClassVar[int] = 2

    @property
    def kind_label(self) -> str:
        return "model"

    def normalization(self, in_channels: int) -> Normalization:
        """Mean and std the model expects; the harness applies them (as ART preprocessing)."""
        return Normalization((0.5,) * in_channels, (0.25,) * in_channels)

    def head(self, module: nn.Module) -> nn.Module:
        """The classification head of a module this plugin built (the final classifier).

        Defenses that train or replace only the head (deep colorization's ``last-layer``
        stage) or read the features entering it (the denoising CNN's neighbor loss) use it.
        The default finds an attribute ``fc``, ``classifier`` or ``head``, or else the last
        child of an ``nn.Sequential``; override it when the head lives elsewhere.

        Raises:
            UsageError: When the head cannot be found.
        """
        for attribute in ("fc", "classifier", "head"):
            candidate = getattr(module, attribute, None)
            if isinstance(candidate, nn.Module):
                return candidate
        if isinstance(module, nn.Sequential) and len(module) > 0:
            return module[-1]
        from medbench.errors import UsageError

        raise UsageError(
            f"model {self.name!r} does not expose its classification head "
            "(no fc/classifier/head attribute); override Model.head"
        )

    def roi_size(self) -> tuple[int, ...] | None:
        """Spatial size of the patches the module is built for, or None when any size works.

        Segmentation networks with a fixed input size (UNETR) return it: the harness then
        trains on patches of that size, attacks volumes patch by patch and evaluates them
        with sliding-window inference. The default is None.
        """
        return None

    @abstractmethod
    def build(self, task: Task, in_channels: int, num_classes: int, weights: str | None = None) -> nn.Module:
        """Build a fresh module.

        Args:
            task: ``classification`` or ``segmentation``.
            in_channels: Channels of the input (1 for grayscale).
            num_classes: Output classes (logits).
            weights: None (random init), a local file path, or a named set such as
                ``imagenet`` resolved from the local torch hub cache. Never downloads.

        Raises:
            UsageError: When the weights are missing, with the path where to put them.
        """


# --------------------------------------------------------------------------- defenses


@dataclass
class DefendedModel:
    """A model ready to be attacked: what ART's estimator wraps.

    Attributes:
        model: Module taking normalised input and returning logits.
        normalization: Applied by ART as preprocessing (after ``preprocessors``).
        preprocessors: ART preprocessing defences applied to the [0, 1] input before
            normalisation (e.g. ``PreprocessorPyTorch`` subclasses). Non-differentiable ones
            must implement ``estimate_gradient`` (BPDA).
        modules: Trainable parts whose weights are cached besides ``model`` (e.g. a
            denoiser inside a preprocessor), by name.
    """

    model: nn.Module
    normalization: Normalization
    preprocessors: list[Any] = field(default_factory=list)
    modules: dict[str, nn.Module] = field(default_factory=dict)

    def state_dicts(self) -> dict[str, dict[str, torch.Tensor]]:
        """Everything that training changed, for the model cache."""
        return {"model": self.model.state_dict(), **{k: m.state_dict() for k, m in self.modules.items()}}

    def load_state_dicts(self, states: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
        self.model.load_state_dict(states["model"])
        for key, module in self.modules.items():
            module.load_state_dict(states[key])

    def to(self, device: torch.device) -> DefendedModel:
        self.model.to(device)
        for module in self.modules.values():
            module.to(device)
        return self

    def eval(self) -> DefendedModel:
        self.model.eval()
        for module in self.modules.values():
            module.eval()
        return self


class DefenseContext(ABC):
    """What the harness gives a defense to build and train its defended model.

    Implemented by the harness (:class:`medbench.defending.Context`); plugins only call it.
    """

    dataset: DatasetBundle
    device: torch.device
    seed: int

    @abstractmethod
    def new_model(self, in_channels: int | None = None) -> DefendedModel:
        """A freshly initialised base model (the matrix's model plugin), not trained.

        Args:
            in_channels: Input channels of the module (default: the dataset's). Defenses
                that put a colorization module in front of the model ask for 3. The
                normalisation returned is the model's for that many channels.
        """

    @abstractmethod
    def normalization(self, in_channels: int | None = None) -> Normalization:
        """The model plugin's normalisation for ``in_channels`` inputs (default: the dataset's)."""

    @abstractmethod
    def head(self, module: nn.Module) -> nn.Module:
        """The classification head of a module built by :meth:`new_model` (see :meth:`Model.head`)."""

    @abstractmethod
    def trained(self, defense: Defense) -> DefendedModel:
        """The trained defended model of another defense configuration (same model, dataset,
        training settings and seed), from the cache or trained now.

        Staged training uses it: a stage starts from the result of the previous one. The
        returned object is a private copy that the caller may modify.
        """

    @abstractmethod
    def base(self) -> DefendedModel:
        """The trained model this defense wraps: the rest of a composed chain
        (``reformer+dcnn`` gives ``reformer`` the ``dcnn`` model) or, at the end of a
        chain, the standard-trained model (defense ``none``), from the cache when present."""

    @abstractmethod
    def train(
        self,
        defended: DefendedModel,
        *,
        perturb: Callable[[DefendedModel, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        loss: Callable[[DefendedModel, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        parameters: list[nn.Parameter] | None = None,
        epochs: int | None = None,
    ) -> None:
        """Train ``defended`` with the matrix's training settings (epochs, batch size, lr).

        Args:
            defended: Trained in place, on the context's device.
            perturb: Optional ``(defended, x, y) -> x'`` applied to every training batch
                (adversarial training); called with the model in eval mode and must
                return a tensor in [0, 1] without tracking gradients of the parameters.
            loss: Optional ``(defended, x, y) -> scalar`` replacing cross-entropy on the
                (perturbed) batch.
            parameters: What the optimiser updates (default: every parameter of the
                model and of ``defended.modules``). The other parts stay frozen, in eval mode.
            epochs: Overrides the run's number of epochs (a small denoiser that needs
                more passes than the classifier; documented as a defense setting).
        """

    @abstractmethod
    def logits(self, defended: DefendedModel, x: torch.Tensor) -> torch.Tensor:
        """Differentiable forward pass from [0, 1] input: preprocessors, normalisation, model."""

    @abstractmethod
    def roi_size(self) -> tuple[int, ...] | None:
        """The patch size the model plugin's network takes (see :meth:`Model.roi_size`)."""


class Defense(Plugin, ABC):
    """A defense plugin: turns a base model and a dataset into a :class:`DefendedModel`.

    The harness calls :meth:`build` for the architecture, then loads the cached weights
    or, on a cache miss, calls :meth:`fit` and caches the result (when ``trainable``).
    """

    kind: ClassVar[DefenseKind] = "training"
    tasks: ClassVar[frozenset[str]] = CLASSIFICATION
    trainable: ClassVar[bool] = True
    """False for defenses with nothing to train: no cache entry, no :meth:`fit` call."""

    @property
    def kind_label(self) -> str:
        return "defense"

    @abstractmethod
    def build(self, ctx: DefenseContext) -> DefendedModel:
        """Return the (untrained) defended model. May call ``ctx.base()`` or ``ctx.new_model()``."""

    def fit(self, defended: DefendedModel, ctx: DefenseContext) -> None:
        """Train ``defended`` in place. The default does nothing."""

    def cache_identity(self) -> dict[str, Any]:
        """What besides the settings defines the trained weights (e.g. the hash of a file a
        setting points to); part of the model-cache key. The default is empty."""
        return {}

    def visualize(self, defended: DefendedModel, x: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        """Intermediate images worth looking at (e.g. what a colorization module makes of the input).

        The harness calls it once per cell on a few clean evaluation images and logs each
        entry as the MLflow artifact ``defense/<name>.png``: one row per tensor.

        Args:
            defended: The trained defended model, in eval mode.
            x: Clean inputs in [0, 1], on the model's device.

        Returns:
            ``{name: [rows]}``, each row ``(N, 1 or 3, H, W)`` in [0, 1]. The default is empty.
        """
        return {}


# --------------------------------------------------------------------------- attacks


class Attack(Plugin, ABC):
    """An attack plugin: crafts adversarial inputs against an ART estimator.

    Subclasses declare their threat model and budget and implement :meth:`generate`.
    """

    threat_model: ClassVar[ThreatModel] = "linf"
    budget_name: ClassVar[str] = "eps"
    """Name of the budget parameter: ``eps``, ``sigma``, ``q_max``..."""
    default_budgets: ClassVar[tuple[float, ...]] = (4 / 255, 8 / 255)
    budget_on_intensity_scale: ClassVar[bool] = True
    """True when the budget is on the [0, 1] intensity scale (``--eps`` then applies)."""
    tasks: ClassVar[frozenset[str]] = CLASSIFICATION

    @property
    def kind_label(self) -> str:
        return "attack"

    @abstractmethod
    def generate(
        self, estimator: BaseEstimator, x: torch.Tensor, y: torch.Tensor, budget: float, *, seed: int
    ) -> torch.Tensor:
        """Craft adversarial examples for one batch.

        Args:
            estimator: The ART estimator around the defended model (``PyTorchClassifier``
                for classification); its ``device`` is where ``x`` lives.
            x: Clean inputs in [0, 1], on the estimator's device.
            y: True labels (class indices), on the same device.
            budget: The budget value on the scale of :attr:`budget_name`.
            seed: Seeds random starts and noise, so that a cell is reproducible.

        Returns:
            Adversarial inputs of the same shape and device, inside the budget and [0, 1];
            or an :class:`AttackResult` holding them and counts to log (queries).
        """

    def generate_budgets(
        self,
        estimator: BaseEstimator,
        x: torch.Tensor,
        y: torch.Tensor,
        budgets: Sequence[float],
        *,
        seeds: Sequence[int],
    ) -> list[torch.Tensor | AttackResult]:
        """Craft adversarial examples of one batch for several budgets at once.

        The harness calls this when a defended model is attacked at several budgets of one
        attack. The default calls :meth:`generate` once per budget; an attack whose budgets
        share work overrides it (FGSM computes its gradient once for every ε). Each element
        must be what :meth:`generate` returns for that budget and seed.

        Args:
            estimator: As for :meth:`generate`.
            x: As for :meth:`generate`.
            y: As for :meth:`generate`.
            budgets: The budget values.
            seeds: One seed per budget (each cell has its own).

        Returns:
            One result per budget, in the order of ``budgets``.
        """
        return [
            self.generate(estimator, x, y, budget, seed=seed)
            for budget, seed in zip(budgets, seeds, strict=True)
        ]


@dataclass
class AttackResult:
    """What :meth:`Attack.generate` may return instead of a bare tensor.

    Attributes:
        x_adv: The adversarial batch (same contract as a bare return value).
        totals: Counts summed over the batch's samples, e.g. ``{"queries": 5120.0}`` for
            the model queries a black-box attack made. The harness sums them over the
            batches of a cell and logs ``<name>_mean``, the total per attacked sample.
    """

    x_adv: torch.Tensor
    totals: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------- metrics


@dataclass
class CellOutputs:
    """What one cell produced, given to metric plugins. All tensors are on the CPU."""

    x_clean: torch.Tensor
    x_adv: torch.Tensor
    labels: torch.Tensor
    clean_logits: torch.Tensor
    adv_logits: torch.Tensor
    budget: float
    budget_name: str
    task: Task


class Metric(Plugin, ABC):
    """An extra metric computed for every cell and logged under :attr:`name`."""

    tasks: ClassVar[frozenset[str]] = CLASSIFICATION

    @property
    def kind_label(self) -> str:
        return "metric"

    @abstractmethod
    def compute(self, outputs: CellOutputs) -> float:
        """Return the metric's value for one cell (NaN when undefined)."""
