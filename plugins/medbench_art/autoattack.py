"""AutoAttack (Croce & Hein, 2020) through ART's ``AutoAttack`` ensemble, L∞.

Two versions (setting ``version``); ART runs the attacks in this order, each one only on the
samples that all earlier ones failed to break (and that were classified correctly):

``standard`` (the default), as close to Croce & Hein's standard AutoAttack as ART allows:

1. APGD-CE: untargeted, cross-entropy, 100 iterations, 1 random start;
2. APGD-T: APGD on ART's DLR loss, *targeted*, at each of the 9 classes with the highest
   logits after the label (fewer when the data have fewer classes), 100 iterations and 1
   random start per target (:class:`TopClassesTargetedAPGD`);
3. Square: 5000 iterations (Croce & Hein's 5000 queries), p_init 0.8, 1 restart.

Croce & Hein's FAB-T is left out: ART has no FAB attack. ART's targeted DLR divides by
``z_π1 − z_π3`` where Croce & Hein use ``z_π1 − (z_π3 + z_π4)/2``.

``fast``: APGD-CE and then untargeted APGD-DLR, 20 iterations each, 1 random start; no
targeted or black-box stage.

The DLR losses need at least 3 classes: on binary data APGD-T (standard) and APGD-DLR
(fast) are left out, so ``standard`` runs APGD-CE and Square and ``fast`` APGD-CE only
(with two classes the only target is the other class, which untargeted APGD-CE covers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from art.attacks.attack import EvasionAttack
from art.attacks.evasion import AutoAttack as ARTAutoAttack
from art.attacks.evasion import AutoProjectedGradientDescent, SquareAttack
from art.attacks.evasion.auto_attack import run_attack
from art.config import ART_NUMPY_DTYPE
from art.estimators.classification.classifier import ClassifierMixin
from art.estimators.estimator import BaseEstimator, LossGradientsMixin
from art.utils import check_and_transform_label_format

from medbench.api import CLASSIFICATION
from medbench_art._art_bridge import ARTEvasionAttack
from medbench_art._classification import require_single_label

STANDARD_ITERATIONS = 100
FAST_ITERATIONS = 20


class TopClassesTargetedAPGD(EvasionAttack):
    """Croce & Hein's APGD-T as one untargeted attack: targeted APGD-DLR at the classes ranked
    2nd, 3rd, ... by the clean logits, keeping for each sample the first run that misclassifies it.

    Untargeted from the outside (``targeted`` is False), so ART's ``AutoAttack`` runs it with
    the true labels in its single untargeted pass.
    """

    attack_params = [*EvasionAttack.attack_params, "n_target_classes"]
    _estimator_requirements = (BaseEstimator, LossGradientsMixin, ClassifierMixin)

    def __init__(
        self,
        estimator: Any,
        *,
        eps: float,
        eps_step: float,
        max_iter: int,
        n_target_classes: int,
        batch_size: int,
    ) -> None:
        super().__init__(estimator=estimator)
        self.n_target_classes = n_target_classes
        self.batch_size = batch_size
        self._apgd = AutoProjectedGradientDescent(
            estimator,
            norm=np.inf,
            eps=eps,
            eps_step=eps_step,
            max_iter=max_iter,
            targeted=True,
            nb_random_init=1,
            batch_size=batch_size,
            loss_type="difference_logits_ratio",
            verbose=False,
        )

    def generate(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs: Any) -> np.ndarray:
        if y is None:
            raise ValueError("APGD-T needs the true labels")
        classes = self.estimator.nb_classes
        labels = np.argmax(check_and_transform_label_format(y, nb_classes=classes), axis=1)
        x_adv = x.astype(ART_NUMPY_DTYPE).copy()
        logits = self.estimator.predict(x_adv, batch_size=self.batch_size)
        ranked = np.argsort(-logits, axis=1)
        broken = np.argmax(logits, axis=1) != labels
        for rank in range(1, min(self.n_target_classes, classes - 1) + 1):
            todo = np.flatnonzero(~broken)
            if not len(todo):
                break
            targets = np.eye(classes, dtype=ART_NUMPY_DTYPE)[ranked[todo, rank]]
            candidates = self._apgd.generate(x_adv[todo], y=targets)
            predicted = np.argmax(self.estimator.predict(candidates, batch_size=self.batch_size), axis=1)
            success = predicted != labels[todo]
            x_adv[todo[success]] = candidates[success]
            broken[todo[success]] = True
        return x_adv


class SequentialAutoAttack(ARTAutoAttack):
    """ART's ``AutoAttack`` on its sequential, untargeted path.

    ART's ``generate`` imports the optional ``multiprocess`` package even when it runs
    without a process pool, which is not installed here; this ``generate`` is ART's
    sequential loop (ART's ``run_attack`` per attack, on the samples still robust) without it.
    """

    def generate(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs: Any) -> np.ndarray:
        if y is None:
            raise ValueError("AutoAttack needs the true labels")
        y = check_and_transform_label_format(y, nb_classes=self.estimator.nb_classes)
        x_adv = x.astype(ART_NUMPY_DTYPE)
        predicted = self.estimator_orig.predict(x_adv, batch_size=self.batch_size)
        robust = np.argmax(predicted, axis=1) == np.argmax(y, axis=1)
        # ART's constants are untyped; as ints, numpy's stubs pick where()'s three-argument overload
        self.best_attacks = np.where(robust, int(self.SAMPLE_DEFAULT), int(self.SAMPLE_MISCLASSIFIED))
        for index, attack in enumerate(self.attacks):
            if not robust.any():
                break
            x_adv, robust = run_attack(
                x=x_adv,
                y=y,
                sample_is_robust=robust,
                attack=attack,
                estimator_orig=self.estimator,
                norm=self.norm,
                eps=self.eps,
                **kwargs,
            )
            self.best_attacks[(self.best_attacks == self.SAMPLE_DEFAULT) & ~robust] = index
        return x_adv


@dataclass(frozen=True)
class AutoAttackSettings:
    """AutoAttack settings.

    Attributes:
        version: ``standard`` (APGD-CE, APGD-T, Square) or ``fast`` (APGD-CE, APGD-DLR with
            fewer iterations); see the module documentation for exactly what each runs.
        apgd_iter: Iterations of every APGD run; None: 100 (standard) or 20 (fast).
        n_target_classes: Target classes of APGD-T (9, Croce & Hein's), standard only.
        square_queries: Iterations of Square (5000, Croce & Hein's), standard only.
    """

    version: Literal["standard", "fast"] = "standard"
    apgd_iter: int | None = None
    n_target_classes: int = 9
    square_queries: int = 5000

    def validate(self) -> None:
        if self.apgd_iter is not None and self.apgd_iter < 1:
            raise ValueError("apgd_iter must be >= 1 (or none for the version's default)")
        if self.n_target_classes < 1:
            raise ValueError("n_target_classes must be >= 1")
        if self.square_queries < 1:
            raise ValueError("square_queries must be >= 1")


class AutoAttack(ARTEvasionAttack):
    """The AutoAttack ensemble under L∞ (ART ``AutoAttack``): each attack runs on the samples
    the earlier ones left correctly classified, and a sample counts as broken by the first
    attack that misclassifies it within ε. Seeded random starts; single-label classification only.
    """

    name = "autoattack"
    description = (
        "AutoAttack ensemble, L∞: standard = APGD-CE, APGD-T, Square 5000; fast = APGD-CE, APGD-DLR (ART)"
    )
    threat_model = "linf"
    tasks = CLASSIFICATION
    budget_name = "eps"
    default_budgets = (4 / 255, 8 / 255)
    Settings = AutoAttackSettings

    def generate(
        self, estimator: Any, x: torch.Tensor, y: torch.Tensor, budget: float, *, seed: int
    ) -> torch.Tensor:
        require_single_label(self.name, estimator, y)
        return super().generate(estimator, x, y, budget, seed=seed)

    def attacks(self, estimator: Any, budget: float, batch_size: int) -> list[Any]:
        """The ART attacks the configured version runs, in order, for budget ε."""
        settings: AutoAttackSettings = self.settings
        standard = settings.version == "standard"
        iterations = settings.apgd_iter or (STANDARD_ITERATIONS if standard else FAST_ITERATIONS)
        step = 2 * budget
        dlr = estimator.nb_classes >= 3

        def apgd(loss_type: str) -> AutoProjectedGradientDescent:
            return AutoProjectedGradientDescent(
                estimator,
                norm=np.inf,
                eps=budget,
                eps_step=step,
                max_iter=iterations,
                targeted=False,
                nb_random_init=1,
                batch_size=batch_size,
                loss_type=loss_type,
                verbose=False,
            )

        attacks: list[Any] = [apgd("cross_entropy")]
        if not standard:
            return [*attacks, apgd("difference_logits_ratio")] if dlr else attacks
        if dlr:
            attacks.append(
                TopClassesTargetedAPGD(
                    estimator,
                    eps=budget,
                    eps_step=step,
                    max_iter=iterations,
                    n_target_classes=settings.n_target_classes,
                    batch_size=batch_size,
                )
            )
        attacks.append(
            SquareAttack(
                estimator,
                norm=np.inf,
                max_iter=settings.square_queries,
                eps=budget,
                p_init=0.8,
                nb_restarts=1,
                batch_size=batch_size,
                verbose=False,
            )
        )
        return attacks

    def make(self, estimator: Any, budget: float, batch_size: int) -> Any:
        return SequentialAutoAttack(
            estimator,
            norm=np.inf,
            eps=budget,
            eps_step=2 * budget,
            attacks=self.attacks(estimator, budget, batch_size),
            batch_size=batch_size,
            targeted=False,
        )
