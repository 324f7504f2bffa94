"""Helpers shared by the tests and the benchmarks (both may import this package; it imports neither)."""
