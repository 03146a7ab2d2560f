"""Models that are not plugins: a user's module object, a Python factory, a TorchScript file.

``--model path/to/file.py:build``, ``--model my_package.module:build`` and
``--model model.pt`` (TorchScript) on the command line, or an ``nn.Module`` / factory given to
:func:`medbench.evaluate`, become a :class:`UserModel`: a :class:`~medbench.api.Model` like
any plugin's, identified not by a name but by the **contents** that define it (the hash of
the factory's source file, of the TorchScript file, or of a module's class and state dict),
so that a changed model is never mistaken for an old one in the cell key or the model cache.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from medbench.api import ALL_TASKS, Model, Normalization, Task
from medbench.building.cache import file_sha256
from medbench.building.model_identity import function_identity, module_identity
from medbench.errors import UsageError, first_line

TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".jit")
NORMALIZATION_PRESETS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "none": ((0.0,), (1.0,)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
"""Named input normalisations (``--normalization``): ``none`` leaves [0, 1] input as it is."""

Factory = Callable[..., nn.Module]


def canonical_name(name: str) -> str:
    """``./nets/../nets.py:build`` → ``nets.py:build``: one spelling of a file-based model's name."""
    if not is_user_model(name):
        return name
    location, colon, attribute = name.rpartition(":") if ":" in name else (name, "", "")
    if location.endswith(".py") or not colon:
        location = os.path.normpath(location)
    return f"{location}{colon}{attribute}"


def is_user_model(name: str) -> bool:
    """True for ``file.py:function``, ``package.module:function`` and TorchScript file names."""
    return ":" in name or name.endswith(TORCHSCRIPT_SUFFIXES)


def parse_normalization(text: str | None) -> Normalization | None:
    """``none``, ``imagenet`` or ``MEAN,STD`` / ``M1,M2,M3,S1,S2,S3``; None keeps the model's own.

    Raises:
        UsageError: For anything else, or a standard deviation that is not positive.
    """
    if text is None or text == "model":
        return None
    key = text.strip().lower()
    if key in NORMALIZATION_PRESETS:
        mean, std = NORMALIZATION_PRESETS[key]
        return Normalization(mean, std)
    try:
        values = [float(part) for part in key.split(",")]
    except ValueError:
        values = []
    if len(values) not in (2, 6) or any(v <= 0 for v in values[len(values) // 2 :]):
        raise UsageError(
            f"--normalization {text!r}: expected none, imagenet, model, MEAN,STD or "
            "M1,M2,M3,S1,S2,S3 with positive standard deviations"
        )
    half = len(values) // 2
    return Normalization(tuple(values[:half]), tuple(values[half:]))


def file_identity(path: str | Path | None) -> dict[str, str] | None:
    """``{"sha256": ...}`` of an existing file (weights, checkpoints); None for names such as
    ``imagenet`` or for nothing. A file is identified by its contents, never by its path."""
    if path is None:
        return None
    candidate = Path(path).expanduser()
    if not candidate.is_file():
        return None
    return {"sha256": file_sha256(candidate)}


class UserModel(Model):
    """A model given as an object, a factory or a TorchScript file instead of a plugin name.

    Attributes:
        trained: True for a module object or a TorchScript file (by default, for a module):
            it is evaluated as it is, standard "training" leaves it unchanged.
        identity: What defines it, for the cell key and the model cache.
    """

    name: ClassVar[str] = "user"
    tasks: ClassVar[frozenset[str]] = ALL_TASKS

    def __init__(
        self,
        label: str,
        *,
        factory: Factory | None = None,
        module: nn.Module | None = None,
        normalization: Normalization | None = None,
        dims: int = 2,
        identity: dict[str, Any] | None = None,
        trained: bool | None = None,
    ) -> None:
        super().__init__()
        if (factory is None) == (module is None):
            raise ValueError("give a factory or a module")
        self.name = label  # type: ignore[misc]  # an instance's own name, not the class's
        self.dims = dims  # type: ignore[misc]
        self._factory = factory
        self._module = module
        self._normalization = normalization
        self.trained = module is not None if trained is None else trained
        self.identity = identity if identity is not None else _identity_of(factory, module)

    def normalization(self, in_channels: int) -> Normalization:
        """The normalisation given with the model; none (identity) when none was given."""
        if self._normalization is None:
            return Normalization((0.0,) * in_channels, (1.0,) * in_channels)
        return self._normalization.for_channels(in_channels)

    def build(self, task: Task, in_channels: int, num_classes: int, weights: str | None = None) -> nn.Module:
        """A copy of the module, or the factory's module, with ``weights`` (a state-dict file) loaded."""
        if self._module is not None:
            module = copy.deepcopy(self._module)
        else:
            assert self._factory is not None
            module = call_factory(self._factory, self.name, task, in_channels, num_classes)
        if weights is not None:
            load_state_file(module, Path(weights), owner=f"model {self.name!r}", option="--weights")
        return module


def _identity_of(factory: Factory | None, module: nn.Module | None) -> dict[str, Any]:
    if module is not None:
        return module_identity(module)
    assert factory is not None
    identity: dict[str, Any] = {
        "factory": f"{factory.__module__}.{getattr(factory, '__qualname__', '')}",
        "function_sha256": function_identity(factory),
    }
    try:
        source = inspect.getsourcefile(factory)
    except TypeError:
        source = None
    if source and Path(source).is_file():
        identity["source_sha256"] = file_sha256(Path(source))
    return identity


def call_factory(factory: Factory, label: str, task: Task, in_channels: int, num_classes: int) -> nn.Module:
    """Call a model factory with the keyword arguments it names among ``task``, ``in_channels``
    and ``num_classes``; its result must be an ``nn.Module``.

    Raises:
        UsageError: When the factory raises or returns something else.
    """
    offered = {"task": task, "in_channels": in_channels, "num_classes": num_classes}
    try:
        parameters = inspect.signature(factory).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        kwargs = {k: v for k, v in offered.items() if takes_any or k in parameters}
        module = factory(**kwargs)
    except UsageError:
        raise
    except Exception as error:
        raise UsageError(f"model {label!r}: the factory raised {first_line(error)}") from error
    if not isinstance(module, nn.Module):
        raise UsageError(
            f"model {label!r}: the factory returned {type(module).__name__}, not a torch.nn.Module"
        )
    return module


def load_state_file(module: nn.Module, path: Path, *, owner: str, option: str) -> None:
    """Load a state-dict file (``torch.save(model.state_dict())``, or a dict holding one under
    ``state_dict`` / ``model``) into ``module``, strictly, with weights-only unpickling.

    Raises:
        UsageError: When the file is missing or unreadable, or its keys or shapes do not fit.
    """
    if not path.is_file():
        raise UsageError(f"{option} {path}: no such file")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        hint = "; a TorchScript file is a model: give it as --model" if _is_torchscript(path) else ""
        raise UsageError(
            f"{option} {path}: not a state dict saved with torch.save(model.state_dict(), path){hint}"
        ) from error
    if isinstance(loaded, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(loaded.get(key), dict):
                loaded = loaded[key]
                break
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise UsageError(f"{option} {path}: expected a state dict of tensors")
    state = {k.removeprefix("module."): v for k, v in loaded.items()}
    own = module.state_dict()
    problems = [
        f"{key} is {tuple(value.shape)} in the file, {tuple(own[key].shape)} in the model"
        for key, value in state.items()
        if key in own and own[key].shape != value.shape
    ][:2]
    problems += (
        [f"missing {', '.join(k for k in own if k not in state)[:120]}"] if set(own) - set(state) else []
    )
    problems += (
        [f"unexpected {', '.join(k for k in state if k not in own)[:120]}"] if set(state) - set(own) else []
    )
    if problems:
        raise UsageError(f"{option} {path} does not fit {owner}: {'; '.join(problems)}")
    module.load_state_dict(state)


def _is_torchscript(path: Path) -> bool:
    try:
        torch.jit.load(str(path), map_location="cpu")
    except Exception:
        return False
    return True


def resolve_user_model(name: str, normalization: str | None, task: Task, dims: int) -> UserModel:
    """The :class:`UserModel` of ``file.py:function``, ``package.module:function`` or a TorchScript file.

    Raises:
        UsageError: When the file or module does not exist, does not import, or lacks the function.
    """
    chosen = parse_normalization(normalization)
    if ":" not in name:
        return _torchscript_model(name, chosen, dims)
    location, _, attribute = name.rpartition(":")
    if not location or not attribute.isidentifier():
        raise UsageError(f"--model {name!r}: expected path/to/file.py:function or package.module:function")
    namespace = _import_location(name, location)
    factory = getattr(namespace, attribute, None)
    if factory is None or not callable(factory):
        found = sorted(
            n for n in vars(namespace) if callable(getattr(namespace, n)) and not n.startswith("_")
        )
        raise UsageError(
            f"--model {name!r}: {location} has no function {attribute!r} "
            f"(it has: {', '.join(found[:8]) or 'none'})"
        )
    return UserModel(name, factory=factory, normalization=chosen, dims=dims)


def _import_location(name: str, location: str) -> Any:
    path = Path(location).expanduser()
    try:
        if location.endswith(".py"):
            if not path.is_file():
                raise UsageError(f"--model {name!r}: no such file {location}")
            module_name = (
                f"medbench_user_model_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}"
            )
            spec = importlib.util.spec_from_file_location(module_name, path)
            if spec is None or spec.loader is None:
                raise UsageError(f"--model {name!r}: cannot import {location}")
            namespace = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = namespace
            spec.loader.exec_module(namespace)
            return namespace
        return importlib.import_module(location)
    except UsageError:
        raise
    except ModuleNotFoundError as error:
        raise UsageError(f"--model {name!r}: no module named {error.name!r}") from error
    except Exception as error:
        raise UsageError(f"--model {name!r}: importing {location} raised {first_line(error)}") from error


def _torchscript_model(name: str, normalization: Normalization | None, dims: int) -> UserModel:
    path = Path(name).expanduser()
    if not path.is_file():
        raise UsageError(f"--model {name!r}: no such TorchScript file")
    try:
        torch.jit.load(str(path), map_location="cpu")
    except Exception as error:
        raise UsageError(f"--model {name!r}: not a TorchScript file ({first_line(error)})") from error

    def load() -> nn.Module:  # loaded anew for each defended model: a scripted module has no deepcopy
        return torch.jit.load(str(path), map_location="cpu")

    identity = {"torchscript_sha256": file_sha256(path)}
    return UserModel(
        name, factory=load, normalization=normalization, dims=dims, identity=identity, trained=True
    )
