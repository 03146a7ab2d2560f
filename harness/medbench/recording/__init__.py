"""Stage 8: MLflow: the layout (every param, tag and artifact name), the tracker, the run summary."""
