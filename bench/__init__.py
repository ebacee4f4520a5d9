"""Benchmarks, run by hand (never in the test suite). Each writes its own section of docs/benchmarks.md."""
