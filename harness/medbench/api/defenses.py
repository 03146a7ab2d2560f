"""Defense plugins, the defended model they build, and the context the harness gives them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from medbench.api.data import DatasetBundle
from medbench.api.models import Normalization
from medbench.api.plugin import CLASSIFICATION, DefenseKind, Plugin

if TYPE_CHECKING:
    pass


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

    Implemented by the harness (:class:`medbench.building.defending.Context`); plugins only call it.
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
    fine_tunes_checkpoint: ClassVar[bool] = False
    """True for a training defense that may start from a trained model given with
    ``--checkpoint`` (or a module object given to :func:`medbench.evaluate`) and fine-tune it;
    other training defenses refuse such a model, which is evaluated as it is."""

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
