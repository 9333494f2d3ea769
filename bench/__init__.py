"""Reproducible benchmarks for `retail`: ingest speed and behaviour under overload.

`python -m bench [ingest|overload|all]` runs them against servers it starts on
127.0.0.1 and prints a markdown table; `bench/RESULTS.md` holds the figures.
"""
