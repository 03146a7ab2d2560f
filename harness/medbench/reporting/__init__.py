"""Stage 9: what a person reads: result tables, progress, example grids."""
