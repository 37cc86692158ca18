"""Benchmarks of Consentry against baselines measured in the same run."""
