"""An example third-party medbench plugin.

medbench finds it through the ``medbench`` entry point declared in ``pyproject.toml`` and
calls the ``register_*`` hooks below once at start-up.
"""

from __future__ import annotations

from collections.abc import Callable

from medbench import hookimpl
from medbench.api import Attack, Dataset, Defense, Model
from medbench_example.median_smoothing import MedianSmoothing
from medbench_example.sign_noise import SignNoise
from medbench_example.stripes import Stripes
from medbench_example.tinymlp import TinyMLP

__version__ = "0.1.0"


@hookimpl
def register_attacks(register: Callable[[Attack], None]) -> None:
    register(SignNoise())


@hookimpl
def register_defenses(register: Callable[[Defense], None]) -> None:
    register(MedianSmoothing())


@hookimpl
def register_datasets(register: Callable[[Dataset], None]) -> None:
    register(Stripes())


@hookimpl
def register_models(register: Callable[[Model], None]) -> None:
    register(TinyMLP())
