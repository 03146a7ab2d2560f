"""Defense ``none``: standard training of the base model (the reference every defense beats)."""

from __future__ import annotations

from medbench.api import ALL_TASKS, DefendedModel, Defense, DefenseContext


class StandardTraining(Defense):
    """Trains the matrix's model on clean data with the task's loss (Adam, the run's training settings)."""

    name = "none"
    description = "No defense: standard training on clean data"
    kind = "training"
    tasks = ALL_TASKS

    def build(self, ctx: DefenseContext) -> DefendedModel:
        return ctx.new_model()

    def fit(self, defended: DefendedModel, ctx: DefenseContext) -> None:
        ctx.train(defended)
