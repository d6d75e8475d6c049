"""Benchmarks (not tests): `python -m meshlab.bench.<name>`."""
