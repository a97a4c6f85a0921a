"""Benchmarks: `make bench` (or `python -m bench [NAME ...]`). Each prints a table and writes bench/results/NAME.json."""
