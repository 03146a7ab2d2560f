"""What identifies a model that is not a plugin: its weights **and** its code.

Two modules with the same class name and state dict can compute different things (a
``Sequential`` with ``ReLU`` or ``Sigmoid``, a class redefined in a notebook, a factory whose
imported architecture file changed), so the identity of a user's model covers:

* its weights: a hash of the state dict's names, dtypes, shapes and values;
* its structure: a hash of ``repr(module)`` (every submodule, with its hyperparameters);
* its code: for every class of its submodules that is not PyTorch's own, the source when
  Python can find it, else the bytecode and constants of its methods;
* for a factory: the factory's bytecode, constants and closure values, besides what it builds.
"""

from __future__ import annotations

import hashlib
import inspect
import types
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

FRAMEWORK_MODULES = ("torch.", "torchvision.", "monai.")
"""Classes from these packages are identified by their versions (recorded with every run)."""


def _sha256(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
        digest.update(b"\x00")
    return digest.hexdigest()


def state_identity(module: nn.Module) -> str:
    """A hash of the state dict (names, dtypes, shapes and values)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def _code_bytes(code: types.CodeType) -> bytes:
    """A code object's bytecode and constants, nested code objects included."""
    parts = [code.co_code]
    for constant in code.co_consts:
        parts.append(
            _code_bytes(constant) if isinstance(constant, types.CodeType) else repr(constant).encode()
        )
    parts.append(repr(code.co_names).encode())
    return b"|".join(parts)


def class_identity(kind: type) -> str:
    """A hash of a class's source, or of its methods' bytecode where the source is not available."""
    try:
        return _sha256(inspect.getsource(kind).encode())
    except (OSError, TypeError):
        methods = [
            _code_bytes(member.__code__)
            for _, member in sorted(vars(kind).items())
            if isinstance(member, types.FunctionType)
        ]
        return _sha256(kind.__qualname__.encode(), *methods)


def code_identity(module: nn.Module) -> str:
    """A hash of the module's structure and of the code of its non-framework classes."""
    if isinstance(module, torch.jit.ScriptModule):
        return _sha256(str(module.code).encode(), repr(module).encode())
    kinds = {type(m) for m in module.modules()}
    own = sorted(
        (k for k in kinds if not k.__module__.startswith(FRAMEWORK_MODULES)),
        key=lambda k: f"{k.__module__}.{k.__qualname__}",
    )
    return _sha256(repr(module).encode(), *(class_identity(k).encode() for k in own))


def module_identity(module: nn.Module) -> dict[str, str]:
    """The class, structure and code, and the weights of a module object."""
    kind = type(module)
    return {
        "class": f"{kind.__module__}.{kind.__qualname__}",
        "code_sha256": code_identity(module),
        "state_sha256": state_identity(module),
    }


def function_identity(function: Callable[..., Any]) -> str:
    """A hash of a factory's bytecode, constants and closure values (what ``make(nn.ReLU)`` bound)."""
    code = getattr(function, "__code__", None)
    if code is None:  # a callable object: its class
        return class_identity(type(function))
    closure = [repr(cell.cell_contents) for cell in (getattr(function, "__closure__", None) or ())]
    defaults = repr(getattr(function, "__defaults__", None))
    return _sha256(_code_bytes(code), defaults.encode(), *(c.encode() for c in closure))
