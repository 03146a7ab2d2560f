"""Built-in plugin ``tcglcm``: domain assimilation (Chen & Luo, 2024; paper 000).

Defenses:

* ``tc``: a texture module and a color module in front of the backbone (the matrix's
  model, built for 3 channels), trained end to end with cross-entropy.
* ``tc-glcm``: the same with the GLCM loss, ``α·CE + (1 − α)·GLCMLoss``, α = 0.98.

Parts: :mod:`medbench_tcglcm.glcm` (batched differentiable GLCM whose hard mode equals
scikit-image's ``graycomatrix``/``graycoprops``), :mod:`medbench_tcglcm.loss` (eq. 19 and
how its 40 features are normalised), :mod:`medbench_tcglcm.modules` (T and C) and
:mod:`medbench_tcglcm.defense`. Each cell of these defenses logs
``defense/texture-color.png``: input, texture-module output and colorized image.
"""

from __future__ import annotations

from collections.abc import Callable

from medbench import hookimpl
from medbench.api import Defense
from medbench_tcglcm.defense import TextureColor, TextureColorGLCM


@hookimpl
def register_defenses(register: Callable[[Defense], None]) -> None:
    register(TextureColor())
    register(TextureColorGLCM())
