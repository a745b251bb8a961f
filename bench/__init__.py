"""Benchmarks; results are recorded in bench/RESULTS.md."""
