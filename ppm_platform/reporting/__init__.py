"""Reporting: every PNG plot of the project and the PNG -> markdown embedder (:mod:`.plots`; matplotlib, Agg
backend). At the bottom of the layers: it takes plain numbers, so any layer can plot."""
