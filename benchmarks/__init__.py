"""Benchmarks and sweeps, run from a checkout (`python -m benchmarks.bench`); not part of the installed package."""
