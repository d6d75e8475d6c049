"""Benchmarks (not tests): `make bench-testbed`, `make bench-dataplane`, `make bench-report`
(`meshlab bench testbed|dataplane|report`)."""
