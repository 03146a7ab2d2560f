"""Weights resolution for the built-in models: random init, local files, local ImageNet weights.

``Model.build(..., weights=...)`` accepts:

* ``None`` (or ``"none"``): random initialisation.
* A local file (``.pt`` / ``.pth``): loaded with ``torch.load(path, map_location="cpu",
  weights_only=True)``. The file holds a plain ``state_dict`` or a dict with a
  ``"state_dict"`` or ``"model"`` entry (what ``DefendedModel.state_dicts()`` writes);
  a leading ``module.`` (``DataParallel``) is stripped from the keys. The state dict is
  loaded strictly into the final model (adapted first conv, new head).
* A named set, ``"imagenet"`` (torchvision's default ImageNet weights of the architecture)
  or a torchvision enum name such as ``"imagenet1k_v1"``: resolved **only from local
  files**, first ``$MEDBENCH_WEIGHTS_DIR/<file>``, then the torch hub cache
  ``torch.hub.get_dir()/checkpoints/<file>``, where ``<file>`` is the basename of the
  torchvision download URL (``resnet18-f37072fd.pth``). The hex digits after the last
  ``-`` of that name are the first digits of the file's sha256 and are checked.

Nothing here ever touches the network.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import torch
from torch import nn

from medbench.api.toolkit import UsageError, file_sha256, first_line

WEIGHTS_DIR_ENV = "MEDBENCH_WEIGHTS_DIR"
"""Environment variable naming a folder searched for named weights before the torch hub cache."""

IMAGENET = "imagenet"
"""The named weights set every torchvision backbone offers (torchvision's ``DEFAULT``)."""

_WRAPPER_KEYS = ("state_dict", "model")
_MODULE_PREFIX = "module."
_HASH_IN_NAME = re.compile(r"-([0-9a-f]+)\.[^-]*$")
_MAX_LISTED = 5
_verified: set[tuple[str, int, int]] = set()


@dataclass(frozen=True)
class WeightsSource:
    """Where the weights of one ``build`` call come from.

    Attributes:
        kind: ``none`` (random init), ``file`` (a local checkpoint) or ``named``.
        path: The checkpoint, when ``kind`` is ``file``.
        name: The lowercase set name, when ``kind`` is ``named``.
    """

    kind: Literal["none", "file", "named"]
    path: Path | None = None
    name: str | None = None


def resolve_weights(
    weights: str | os.PathLike[str] | None, *, owner: str, named: Collection[str] = ()
) -> WeightsSource:
    """Decide what ``weights`` means for one model.

    Args:
        weights: What the user gave: None, ``"none"``, a named set or a local file path.
        owner: Shown in errors, e.g. ``"model 'resnet18'"``.
        named: The named sets this model offers (lowercase), e.g. ``{"imagenet"}``.

    Returns:
        The resolved source. A named set is not looked up on disk yet.

    Raises:
        UsageError: For a named set this model does not offer, a missing file, or a
            string that is neither a known name nor an existing file.
    """
    if weights is None:
        return WeightsSource("none")
    text = os.fspath(weights).strip()
    lowered = text.lower()
    if lowered in ("", "none"):
        return WeightsSource("none")
    if lowered in named:
        return WeightsSource("named", name=lowered)
    path = Path(text).expanduser()
    if path.is_file():
        return WeightsSource("file", path=path)
    if lowered == IMAGENET or lowered.startswith("imagenet1k_"):
        offered = ", ".join(sorted(named)) if named else "no named weights"
        raise UsageError(
            f"{owner} has no {text!r} weights (it offers {offered}); use none or a local .pt/.pth file"
        )
    if path.is_dir():
        raise UsageError(f"{owner}: weights {str(path)!r} is a directory, expected a .pt/.pth file")
    if path.suffix.lower() in (".pt", ".pth") or os.sep in text or (os.altsep and os.altsep in text):
        raise UsageError(f"{owner}: weights file not found: {path.resolve()}")
    choices = [*sorted(named), "none", "a local .pt/.pth file"]
    close = difflib.get_close_matches(lowered, sorted(named), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise UsageError(f"{owner}: unknown weights {text!r} (expected {', '.join(choices)}){hint}")


# --------------------------------------------------------------------------- local checkpoints


def load_checkpoint(path: Path, *, owner: str) -> dict[str, torch.Tensor]:
    """Read a state dict from a local checkpoint file (never unpickles arbitrary objects).

    Args:
        path: A ``.pt`` / ``.pth`` file.
        owner: Shown in errors.

    Returns:
        The state dict, unwrapped from ``{"state_dict": ...}`` or ``{"model": ...}`` and
        with a leading ``module.`` removed from its keys.

    Raises:
        UsageError: When the file cannot be read or holds no state dict.
    """
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and tensor errors alike
        first = first_line(error, with_type=False)
        raise UsageError(
            f"{owner}: cannot load weights {str(path)!r} with weights_only=True ({first}); "
            "save a state_dict (torch.save(model.state_dict(), path)), not a whole model"
        ) from None
    return extract_state_dict(loaded, source=str(path), owner=owner)


def extract_state_dict(loaded: Any, *, source: str, owner: str) -> dict[str, torch.Tensor]:
    """Unwrap a loaded checkpoint into a flat ``name -> tensor`` state dict.

    Args:
        loaded: What ``torch.load`` returned.
        source: Shown in errors (the file).
        owner: Shown in errors.

    Raises:
        UsageError: When no tensor-valued mapping is found.
    """
    state = loaded
    if isinstance(state, Mapping):
        for key in _WRAPPER_KEYS:
            if isinstance(state.get(key), Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not state:
        raise UsageError(f"{owner}: {source!r} holds no state_dict (got {type(loaded).__name__})")
    not_tensors = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise UsageError(f"{owner}: {source!r} is not a state_dict: non-tensor entries {_few(not_tensors)}")
    return {_strip_prefix(str(k)): v for k, v in state.items()}


def _strip_prefix(key: str) -> str:
    return key[len(_MODULE_PREFIX) :] if key.startswith(_MODULE_PREFIX) else key


def load_state_strict(
    model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str, owner: str
) -> None:
    """Load ``state`` into ``model`` strictly, assigning the tensors (works on meta modules).

    Floating-point tensors are cast to the dtype of the parameter they replace; missing
    BatchNorm ``num_batches_tracked`` counters (old checkpoints) are set to 0.

    Args:
        model: The final module (possibly built on the ``meta`` device).
        state: A flat state dict.
        source: Shown in errors (the file).
        owner: Shown in errors.

    Raises:
        UsageError: On missing or unexpected keys or shape mismatches, listing a few of each.
    """
    expected = model.state_dict()
    # files saved before PyTorch 0.4.1 (torchvision's DenseNet weights) have no BatchNorm
    # counters; load_state_dict fills them in the same way for old checkpoints
    state = {
        **{k: torch.tensor(0) for k in expected if k.endswith(".num_batches_tracked") and k not in state},
        **state,
    }
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys {_few(unexpected)}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches (file vs model) {_few(shapes)}")
        raise UsageError(
            f"{owner}: weights {source!r} do not fit the model: {'; '.join(parts)} "
            "(same in_channels, num_classes and settings as when it was saved?)"
        )
    cast = {k: v.to(dtype=expected[k].dtype) if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(cast, strict=True, assign=True)
    leftover = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:  # non-persistent buffers of a meta-built model: cannot happen with our models
        raise RuntimeError(f"{owner}: tensors left uninitialised after loading: {_few(leftover)}")


def _few(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = f", ... (+{len(items) - _MAX_LISTED})" if len(items) > _MAX_LISTED else ""
    return f"[{shown}{more}]"


# --------------------------------------------------------------------------- torchvision weights


def torchvision_weight_names(arch: str) -> frozenset[str]:
    """The named sets of ``arch``: ``imagenet`` plus torchvision's ``IMAGENET1K_V*`` names, lowercase."""
    from torchvision.models import get_model_weights

    names = {m.name.lower() for m in get_model_weights(arch) if m.name.startswith("IMAGENET1K_V")}
    return frozenset({IMAGENET, *names})


def imagenet_url(arch: str, name: str = IMAGENET) -> str:
    """The torchvision download URL of a named weights set (only read, never fetched).

    Args:
        arch: A torchvision architecture, e.g. ``resnet18``.
        name: ``imagenet`` (torchvision's ``DEFAULT``) or an enum name such as ``imagenet1k_v1``.
    """
    from torchvision.models import get_model_weights

    enum = get_model_weights(arch)
    member = enum.DEFAULT if name == IMAGENET else enum[name.upper()]
    return str(member.url)


def imagenet_filename(arch: str, name: str = IMAGENET) -> str:
    """The file name torchvision caches the weights under: the basename of the URL.

    Example: ``imagenet_filename("resnet18") == "resnet18-f37072fd.pth"``.
    """
    return os.path.basename(urlparse(imagenet_url(arch, name)).path)


def hub_checkpoints_dir() -> Path:
    """``torch.hub.get_dir()/checkpoints``, where torchvision caches downloaded weights."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def search_paths(filename: str) -> list[Path]:
    """Where a named weights file is looked for, in order."""
    paths = []
    weights_dir = os.environ.get(WEIGHTS_DIR_ENV, "").strip()
    if weights_dir:
        paths.append(Path(weights_dir).expanduser() / filename)
    paths.append(hub_checkpoints_dir() / filename)
    return paths


def find_named_weights(arch: str, name: str, *, owner: str) -> Path:
    """Find the local file of a named weights set.

    Raises:
        UsageError: One line naming the file, every path searched and where to put it.
    """
    filename = imagenet_filename(arch, name)
    paths = search_paths(filename)
    for path in paths:
        if path.is_file():
            return path
    url = imagenet_url(arch, name)
    raise UsageError(
        f"{owner}: {name} weights file {filename!r} not found (searched: {', '.join(map(str, paths))}); "
        f"medbench never downloads: fetch {url} and put it in {hub_checkpoints_dir()}/ "
        f"or in a folder named by ${WEIGHTS_DIR_ENV}"
    )


def verify_hash_prefix(path: Path, *, owner: str) -> None:
    """Check the sha256 prefix that torchvision file names carry (``name-<hex>.pth``).

    Files whose name carries no such prefix are accepted as they are. A file that passed
    is remembered (by path, size and mtime) and not hashed again.

    Raises:
        UsageError: When the file's sha256 does not start with the prefix in its name.
    """
    match = _HASH_IN_NAME.search(path.name)
    if match is None:
        return
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _verified:
        return
    digest = file_sha256(path)
    prefix = match.group(1)
    if not digest.startswith(prefix):
        raise UsageError(
            f"{owner}: weights file {str(path)!r} is corrupt or not the expected one: its sha256 "
            f"starts with {digest[: len(prefix)]!r}, its name says {prefix!r}; delete it and fetch it again"
        )
    _verified.add(key)


# torchvision's DenseNet checkpoints predate the ban on '.' in module names
_DENSENET_LEGACY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
    r"((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


def load_named_state_dict(arch: str, name: str, *, owner: str) -> tuple[Path, dict[str, torch.Tensor]]:
    """Read the named (ImageNet) state dict of ``arch`` from local files only.

    The state dict fits the unmodified torchvision model (3 input channels, 1000 classes);
    legacy DenseNet keys (``norm.1``) are renamed as torchvision does (``norm1``).

    Returns:
        The file read and its state dict.

    Raises:
        UsageError: When the file is absent, fails its hash check or cannot be read.
    """
    path = find_named_weights(arch, name, owner=owner)
    verify_hash_prefix(path, owner=owner)
    state = load_checkpoint(path, owner=owner)
    if arch.startswith("densenet"):
        renamed = {}
        for key, value in state.items():
            match = _DENSENET_LEGACY.match(key)
            renamed[match.group(1) + match.group(2) if match else key] = value
        state = renamed
    return path, state


def check_build_args(
    owner: str, tasks: Collection[str], task: str, in_channels: int, num_classes: int
) -> None:
    """Validate the common arguments of ``Model.build``.

    Raises:
        UsageError: On an unsupported task or a non-positive channel or class count.
    """
    if task not in tasks:
        raise UsageError(f"{owner} supports task {', '.join(sorted(tasks))}, not {task!r}")
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise UsageError(f"{owner}: in_channels must be a positive integer, got {in_channels!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise UsageError(f"{owner}: num_classes must be a positive integer, got {num_classes!r}")
