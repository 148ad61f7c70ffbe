"""Plotting for the notebooks: ``viz`` (chains, weights, variance), ``diagrams`` (the
extended target and the kernels drawn), ``pictures`` (notebook 06's figures)."""
