"""Built-in plugin ``art``: standard attacks on IBM ART and the baseline defenses.

Attacks: ``fgsm``, ``bim``, ``pgd``, ``mifgsm`` (ART evasion attacks on the
``PyTorchClassifier``) and ``gn`` (Gaussian noise), for classification and segmentation; for
single-label classification only, the stronger and black-box ART attacks ``cw-l2`` (minimal
L2, budget ``confidence``), ``cw-linf``, ``autoattack`` (``standard`` or ``fast``),
``apgd-ce``, ``apgd-dlr`` (>= 3 classes), ``square`` (score-based, logs queries),
``deepfool`` (minimal L2, budget ``overshoot``) and ``hsj`` (decision-based, logs queries).
Defenses: ``none`` (standard training), the adversarial-training family ``at-pgd``,
``at-fgsm``, ``at-bim`` and ``at-gn``,
``gaussian-augmentation``, and ART's preprocessing defences ``jpeg``, ``feature-squeezing``,
``spatial-smoothing`` and ``tvm`` (BPDA and EOT where they are not differentiable or random).
"""

from __future__ import annotations

from collections.abc import Callable

from medbench import hookimpl
from medbench.api import Attack, Defense
from medbench_art.apgd_ce import APGDCE
from medbench_art.apgd_dlr import APGDDLR
from medbench_art.at_bim import BIMAdversarialTraining
from medbench_art.at_fgsm import FGSMAdversarialTraining
from medbench_art.at_gn import GaussianNoiseTraining
from medbench_art.at_pgd import PGDAdversarialTraining
from medbench_art.autoattack import AutoAttack
from medbench_art.bim import BIM
from medbench_art.cw_l2 import CWL2
from medbench_art.cw_linf import CWLinf
from medbench_art.deepfool import DeepFool
from medbench_art.feature_squeezing import FeatureSqueezing
from medbench_art.fgsm import FGSM
from medbench_art.gaussian_augmentation import GaussianAugmentation
from medbench_art.gn import GaussianNoise
from medbench_art.hsj import HopSkipJump
from medbench_art.jpeg import Jpeg
from medbench_art.mifgsm import MIFGSM
from medbench_art.pgd import PGD
from medbench_art.spatial_smoothing import SpatialSmoothing
from medbench_art.square import Square
from medbench_art.standard import StandardTraining
from medbench_art.tvm import TotalVariationMinimization


@hookimpl
def register_attacks(register: Callable[[Attack], None]) -> None:
    for attack in (FGSM(), BIM(), PGD(), MIFGSM(), GaussianNoise()):
        register(attack)
    for strong in (CWL2(), CWLinf(), AutoAttack(), APGDCE(), APGDDLR(), Square(), DeepFool(), HopSkipJump()):
        register(strong)


@hookimpl
def register_defenses(register: Callable[[Defense], None]) -> None:
    register(StandardTraining())
    for defense in (
        PGDAdversarialTraining(),
        FGSMAdversarialTraining(),
        BIMAdversarialTraining(),
        GaussianNoiseTraining(),
        GaussianAugmentation(),
        Jpeg(),
        FeatureSqueezing(),
        SpatialSmoothing(),
        TotalVariationMinimization(),
    ):
        register(defense)
