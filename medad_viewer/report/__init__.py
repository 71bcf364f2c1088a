"""Exports: PDF heatmap report, CSV/JSON score tables, map volumes."""
