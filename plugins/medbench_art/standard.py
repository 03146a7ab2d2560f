"""Defense ``none``: standard training of the base model (the reference every defense beats)."""

from __future__ import annotations

from medbench.api import DefendedModel, Defense, DefenseContext


class StandardTraining(Defense):
    """Trains the matrix's model on clean data with cross-entropy (Adam, the run's training settings)."""

    name = "none"
    description = "No defense: standard training on clean data"
    kind = "training"

    def build(self, ctx: DefenseContext) -> DefendedModel:
        return ctx.new_model()

    def fit(self, defended: DefendedModel, ctx: DefenseContext) -> None:
        ctx.train(defended)
