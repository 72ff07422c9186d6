"""Reporting helpers: PNG plots of training curves and test AUC by slice (matplotlib, Agg backend)."""
