"""Reproductions of preroll's published numbers: they import the installed package and are not part of it.

Run from the repository root (``python -m experiments.NAME``); see experiments/README.md.
"""
