"""Shared evaluation code: embedding, trial lists, scoring and metrics for the three evaluation scripts."""
