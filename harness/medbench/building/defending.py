"""Building defended models: defense chains, training, and the model cache.

A defense name may be a chain ``outer+inner`` (e.g. ``reformer+dcnn``): every element
but the last must be a ``preprocessing`` or ``wrapper`` defense, and each element's
``ctx.base()`` is the defended model of the rest of the chain. The end of every chain
rests on the standard-trained model (defense ``none``).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medbench import __version__
from medbench.api import DatasetBundle, DefendedModel, Defense, DefenseContext, Model, Normalization
from medbench.building.cache import ModelCache, stable_hash
from medbench.building.training import EpochCallback, LossFn, Perturb, TrainingHistory, train_defended
from medbench.building.user_models import load_state_file
from medbench.config.spec import TrainingSettings, split_outside_brackets
from medbench.errors import UsageError
from medbench.wrapping.forward import defended_logits

CHAIN_SEPARATOR = "+"
STANDARD_DEFENSE = "none"


def split_chain(name: str) -> list[str]:
    """``reformer+dcnn[lambda_a=0]`` → ``["reformer", "dcnn[lambda_a=0]"]``; raises on empty parts."""
    parts = split_outside_brackets(name, CHAIN_SEPARATOR)
    if not all(parts):
        raise UsageError(f"malformed defense {name!r}: empty part in a '+' chain")
    return parts


def parse_variant(element: str) -> tuple[str, dict[str, str]]:
    """``dcnn[lambda_n=1, lambda_a=0]`` → ``("dcnn", {"lambda_n": "1", "lambda_a": "0"})``.

    A variant names one configuration of a plugin inline, so that one matrix can compare
    several (paper 001's λ ablation, paper 002's training stages). The values are strings,
    coerced like ``--set`` values; they override the run's settings for that plugin.
    """
    if "[" not in element:
        if "]" in element:
            raise UsageError(f"malformed name {element!r}: ']' without '['")
        return element, {}
    name, _, rest = element.partition("[")
    if not rest.endswith("]") or "[" in rest or not name.strip():
        raise UsageError(f"malformed variant {element!r}: expected NAME[key=value,...]")
    overrides: dict[str, str] = {}
    for assignment in split_outside_brackets(rest[:-1], ","):
        key, equals, value = assignment.partition("=")
        if not equals or not key.strip():
            raise UsageError(f"malformed variant {element!r}: {assignment!r} is not key=value")
        overrides[key.strip()] = value.strip()
    return name.strip(), overrides


def chain_label(chain: list[Defense]) -> str:
    """``reformer+dcnn[lambda_a=0]``: each defense with the settings that differ from its defaults."""
    labels = []
    for defense in chain:
        try:
            defaults = type(defense)().settings_dict()
        except TypeError:  # a defense class whose constructor needs arguments
            defaults = {}
        changed = {k: str(v) for k, v in defense.settings_dict().items() if defaults.get(k) != v}
        labels.append(variant_label(defense.name, changed))
    return CHAIN_SEPARATOR.join(labels)


def variant_label(name: str, overrides: dict[str, str]) -> str:
    """The canonical spelling of a variant: ``dcnn[lambda_n=1,lambda_a=0]`` (no spaces)."""
    return name + ("[" + ",".join(f"{k}={v}" for k, v in overrides.items()) + "]" if overrides else "")


def check_chain(chain: list[Defense]) -> None:
    """Only the last element of a chain may be a training defense."""
    for defense in chain[:-1]:
        if defense.kind == "training":
            names = CHAIN_SEPARATOR.join(d.name for d in chain)
            raise UsageError(
                f"defense chain {names!r}: {defense.name!r} is a training defense and must come last "
                "(only preprocessing and wrapper defenses can wrap another defense)"
            )


@dataclass
class DefenseBuilder:
    """Builds (or loads from cache) the defended models of one model plugin on one dataset."""

    dataset: DatasetBundle
    model_name: str
    model: Model
    weights: str | None
    standard: Defense
    training: TrainingSettings
    device: torch.device
    seed: int
    cache: ModelCache
    plugin_versions: dict[str, str] = field(default_factory=dict)
    checkpoint: str | None = None
    """A trained state-dict file loaded into every new model; the standard defense then
    evaluates it as it is instead of training it."""
    normalization: Normalization | None = None
    """The input normalisation to use instead of the model plugin's own."""
    model_identity: dict[str, Any] = field(default_factory=dict)
    """What defines the model beyond its name and settings (hashes of its code, weights and
    checkpoint files; :attr:`medbench.engine.cells.MatrixPlan.model_identities`)."""
    on_epoch: Callable[[str], EpochCallback] | None = None
    on_cache_hit: Callable[[str], None] | None = None
    on_trained: Callable[[str, TrainingHistory], None] | None = None
    _memo: dict[str, DefendedModel] = field(default_factory=dict)
    trained: list[str] = field(default_factory=list)

    def chain_identity(self, chain: list[Defense]) -> list[dict[str, Any]]:
        return [
            {
                "name": d.name,
                "settings": d.settings_dict(),
                **({"extra": extra} if (extra := d.cache_identity()) else {}),
            }
            for d in chain
        ]

    def cache_key(self, chain: list[Defense]) -> str:
        """Hash of everything that defines the trained weights of ``chain``."""
        return stable_hash(
            {
                "medbench": __version__,
                "dataset": self.dataset.fingerprint,
                "model": {"name": self.model_name, "settings": self.model.settings_dict()},
                "weights": self.weights if not self.model_identity.get("weights") else "file",
                **({"model_identity": self.model_identity} if self.model_identity else {}),
                "chain": self.chain_identity(chain),
                "training": self.training,
                "seed": self.seed,
                "plugins": self.plugin_versions,
                # multi-label models keep the epoch of best mean AUC (earlier: exact-match accuracy)
                **({"selection": "mean_auc"} if self.dataset.multilabel else {}),
            }
        )

    def build(self, chain: list[Defense]) -> DefendedModel:
        """The defended model of ``chain``, trained or loaded from cache, in eval mode on the device."""
        if not chain:
            chain = [self.standard]
        key = self.cache_key(chain)
        if key in self._memo:
            return self._memo[key]
        check_chain(chain)
        context = Context(self, chain)
        defense = chain[0]
        defended = defense.build(context)
        label = chain_label(chain)
        if defense.trainable and not (defense.name == STANDARD_DEFENSE and self.evaluates_as_is):
            states = self.cache.load(key)
            if states is not None:
                defended.load_state_dicts(states)
                if self.on_cache_hit is not None:
                    self.on_cache_hit(label)
            else:
                defense.fit(defended, context)
                self.trained.append(label)
                self.cache.save(
                    key,
                    defended.state_dicts(),
                    {
                        "model": self.model_name,
                        "chain": self.chain_identity(chain),
                        "dataset": self.dataset.fingerprint,
                        "training": self.training,
                        "seed": self.seed,
                        "medbench": __version__,
                    },
                )
        defended.to(self.device).eval()
        self._memo[key] = defended
        return defended

    @property
    def evaluates_as_is(self) -> bool:
        """True for a trained model (a checkpoint, or a module object): standard training
        leaves it as it is."""
        return self.checkpoint is not None or bool(getattr(self.model, "trained", False))

    def new_module(self, in_channels: int) -> nn.Module:
        """The model's module with the weights, then the checkpoint, loaded."""
        dataset = self.dataset
        module = self.model.build(dataset.task, in_channels, dataset.num_classes, self.weights)
        if self.checkpoint is not None:
            load_state_file(
                module, Path(self.checkpoint), owner=f"model {self.model_name!r}", option="--checkpoint"
            )
        return module

    def normalization_for(self, in_channels: int) -> Normalization:
        """The override given for the run, else the model's own normalisation."""
        if self.normalization is not None:
            return self.normalization.for_channels(in_channels)
        return self.model.normalization(in_channels)


class Context(DefenseContext):
    """The :class:`medbench.api.DefenseContext` the harness hands to a defense."""

    def __init__(self, builder: DefenseBuilder, chain: list[Defense]) -> None:
        self._builder = builder
        self._chain = chain
        self.dataset = builder.dataset
        self.device = builder.device
        self.seed = builder.seed
        self.training = builder.training

    def new_model(self, in_channels: int | None = None) -> DefendedModel:
        builder = self._builder
        channels = builder.dataset.in_channels if in_channels is None else in_channels
        torch.manual_seed(builder.seed)
        module = builder.new_module(channels)
        return DefendedModel(module.to(builder.device), builder.normalization_for(channels))

    def normalization(self, in_channels: int | None = None) -> Normalization:
        channels = self._builder.dataset.in_channels if in_channels is None else in_channels
        return self._builder.normalization_for(channels)

    def head(self, module: nn.Module) -> nn.Module:
        return self._builder.model.head(module)

    def trained(self, defense: Defense) -> DefendedModel:
        if any(d.name == defense.name and d.settings == defense.settings for d in self._chain):
            raise UsageError(f"defense {defense.name!r} cannot start from its own result")
        return copy.deepcopy(self._builder.build([defense]))

    def base(self) -> DefendedModel:
        rest = self._chain[1:]
        if not rest and self._chain[0].name == self._builder.standard.name:
            raise UsageError(f"defense {self._chain[0].name!r} cannot wrap itself")
        return self._builder.build(rest)

    def train(
        self,
        defended: DefendedModel,
        *,
        perturb: Perturb | None = None,
        loss: LossFn | None = None,
        parameters: list[nn.Parameter] | None = None,
        epochs: int | None = None,
    ) -> None:
        label = chain_label(self._chain)
        training = self.training if epochs is None else dataclasses.replace(self.training, epochs=epochs)
        callback = self._builder.on_epoch(label) if self._builder.on_epoch is not None else None
        history = train_defended(
            defended,
            self.dataset,
            training,
            self.device,
            self.seed,
            perturb=perturb,
            loss=loss,
            parameters=parameters,
            on_epoch=callback,
            roi_size=self._builder.model.roi_size(),
        )
        if self._builder.on_trained is not None:
            self._builder.on_trained(label, history)

    def logits(self, defended: DefendedModel, x: torch.Tensor) -> torch.Tensor:
        return defended_logits(defended, x)

    def roi_size(self) -> tuple[int, ...] | None:
        return self._builder.model.roi_size()
