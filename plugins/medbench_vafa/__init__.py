"""Built-in plugin ``vafa``: VAFA (volumetric adversarial frequency attack) and VAFT
adversarial training (paper 003, Hanif et al., MICCAI 2023).

Attacks ``vafa`` and ``vafa-2d`` (budget ``q_max``) and defenses ``vaft`` and ``vaft-fr``,
for segmentation. The attack is also an ART ``EvasionAttack``
(:class:`medbench_vafa.art_attack.VAFA`) usable without medbench's harness.
"""

from __future__ import annotations

from collections.abc import Callable

from medbench import hookimpl
from medbench.api import Attack, Defense
from medbench_vafa.attacks import VAFA2DAttack, VAFAAttack
from medbench_vafa.vaft import VAFT, VAFTFR


@hookimpl
def register_attacks(register: Callable[[Attack], None]) -> None:
    register(VAFAAttack())
    register(VAFA2DAttack())


@hookimpl
def register_defenses(register: Callable[[Defense], None]) -> None:
    register(VAFT())
    register(VAFTFR())
