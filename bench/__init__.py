"""Benchmarks: ``python bench/run.py [--quick]`` measures our data path, evaluation and training
against faithful re-implementations of the original code's strategies (bench/baseline.py)."""
