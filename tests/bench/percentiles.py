"""The benchmarks' percentile: a measured value, never one interpolated between two."""

from __future__ import annotations


def percentile(values: list[float], q: float) -> float:
    """The value at rank q of `values` sorted (nearest rank): with 20 values, p99 is the
    largest of them."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
