"""Stage 5: the ART view of a defended model: estimators, BPDA and EOT, acceleration."""
