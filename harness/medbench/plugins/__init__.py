"""Stage 2: finding plugins: entry points, registries, hook specifications."""
