"""Denoising CNN (Xue et al., MICCAI 2019): neighbor loss, embedded auto-encoder, pixel denoisers."""
