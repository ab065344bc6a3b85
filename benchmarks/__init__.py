"""Benchmarks: speed, memory and fidelity, measured in one run against peers. Never run by the tests."""
