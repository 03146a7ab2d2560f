"""Stage 6: one cell against one defended model: crafting, output checks, predictions, metrics."""
