"""Deep colorization (Morra et al., ICPR 2020): DECONV, PixelShuffle and ColorU modules.

Defenses (kind ``training``), one per colorization module T placed in front of the run's
model plugin (built for 3-channel input with the run's ``--weights``):

* ``colorize-deconv``: :class:`~medbench_colorization.deconv.Deconv`, 596,611 parameters.
* ``colorize-pixelshuffle``: :class:`~medbench_colorization.pixelshuffle.PixelShuffleColorizer`,
  599,440 parameters.
* ``colorize-coloru``: :class:`~medbench_colorization.coloru.ColorU`, 192,659 parameters
  (0.32 of the others, the paper's "about 1/3"); image sizes must be multiples of 8.

Parameter counts are measured at 1 input channel (gray), the paper's setting.

Setting ``stage`` selects the paper's training stage (§III, eq. 1-3): ``color-module``
(default: T and the head trained, the backbone frozen including its BatchNorm statistics),
``all`` (everything fine-tuned, starting from the ``color-module`` result, head learned
from scratch unless ``reset_head=false``) and ``last-layer`` (only a fresh head trained on
top of T and the backbone taken from ``source``: the ``all`` or ``color-module`` stage on
the same data, or a model-cache ``.pt`` file from another run). See
:mod:`medbench_colorization.defense`.
"""

from __future__ import annotations

from collections.abc import Callable

from medbench import hookimpl
from medbench.api import Defense
from medbench_colorization.defense import (
    ColorUColorization,
    DeconvColorization,
    PixelShuffleColorization,
)


@hookimpl
def register_defenses(register: Callable[[Defense], None]) -> None:
    for defense in (DeconvColorization(), PixelShuffleColorization(), ColorUColorization()):
        register(defense)
