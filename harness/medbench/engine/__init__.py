"""Stage 3: the run: cells and their keys, planning, batching, the runner, executors."""
