"""Deep colorization (Morra et al., ICPR 2020): DECONV, PixelShuffle and ColorU modules."""
