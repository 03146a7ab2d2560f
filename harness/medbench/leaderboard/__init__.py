"""Leaderboards from MLflow: records (read back), entries (schema), curves, rendering, the board."""
