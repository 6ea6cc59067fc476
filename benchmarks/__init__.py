"""Benchmarks run by hand (`python -m benchmarks.<name>`): each prints a markdown table."""
