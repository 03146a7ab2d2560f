"""Stage 4: defended models: user models and data, defense chains, training, the model cache."""
