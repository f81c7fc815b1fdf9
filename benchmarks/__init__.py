"""Benchmarks (``make bench``): scripts that measure the platform, results in ``reports/``."""
