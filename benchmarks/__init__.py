"""Benchmark scripts (``python -m benchmarks.run_all``) and their stored results under ``results/``."""
