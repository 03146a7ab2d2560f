"""Stage 1: what to run: specs and suites, plugin settings, budgets."""
