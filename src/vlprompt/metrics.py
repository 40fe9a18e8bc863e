"""Summaries of accuracies shared by the engine, which records them in a run's results, and the protocols'
tables, which average over runs; kept free of model code so that tables are built without it."""

from __future__ import annotations


def harmonic_mean(a: float, b: float) -> float:
    """The harmonic mean of base and new accuracy (methods.md §1.4); 0 when both are 0."""
    return 2 * a * b / (a + b) if a + b > 0 else 0.0
