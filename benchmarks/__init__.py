"""Benchmarks of ttasks_ipy against the alternatives (not part of the test suite): see README.md."""
