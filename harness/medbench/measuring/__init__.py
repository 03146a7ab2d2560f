"""Stage 7: measuring a cell and a matrix: metrics, gradient checks, sanity checks."""
