"""Denoising CNN (Xue et al., MICCAI 2019): neighbor loss, embedded auto-encoder, pixel denoisers.

Defenses:

* ``dcnn`` (training): ``L = L_c + λ_n·L_n + λ_a·L_a`` (paper eq. 3) with cross-entropy on
  the clean batch and ``noisy_copies`` (3) copies with uniform noise U(−σ, σ), σ = 0.2
  (the code's level; the paper gives none), clamped to [0, 1]; λ_n = 1, λ_a = 10 (the
  paper's choice and the code's defaults). ``L_n`` is read at the input of the
  classification head; the decoder (the code's ``DR18``, generalised to any channel count)
  reads the first residual stage (ResNet ``layer1``, VGG-16 ``features.9``, DenseNet-121
  ``features.denseblock1``, or the ``tap`` setting) and is trained and cached as
  ``modules["decoder"]``; the classifier still sees the undecoded features.
  ``variant=paper`` (default) follows eqs. 1-2: L2 distances, gradients through the clean
  features, reconstruction of the clean image from the clean and the noisy inputs.
  ``variant=code`` follows the official code: MSE to detached clean features and MSE
  reconstruction from the noisy inputs only. Adam (the harness's loop) replaces the
  paper's SGD.
* ``reformer`` (preprocessing): MagNet's denoising auto-encoder (MNIST structure, sigmoid,
  ``width`` 16, training noise N(0, 0.1²)) in front of ``ctx.base()``.
* ``hgd`` (preprocessing): a compact U-Net noise predictor ``x − d(x)`` (``width`` 32)
  trained with the logits guided loss on PGD inputs (``train_eps`` 8/255,
  ``train_steps`` 2) crafted against the frozen base classifier.

The denoisers train only themselves (the base classifier stays frozen), are cached in
``DefendedModel.modules`` and are differentiable, so attacks get exact gradients through
them (no BPDA). They compose with ``dcnn`` as ``reformer+dcnn`` and ``hgd+dcnn`` (paper
Table 4) through the harness's defense chains.
"""

from __future__ import annotations

from collections.abc import Callable

from medbench import hookimpl
from medbench.api import Defense
from medbench_dcnn.dcnn import DCNN
from medbench_dcnn.hgd import HGD
from medbench_dcnn.reformer import Reformer


@hookimpl
def register_defenses(register: Callable[[Defense], None]) -> None:
    register(DCNN())
    register(Reformer())
    register(HGD())
