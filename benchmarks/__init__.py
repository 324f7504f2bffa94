"""The benchmarks behind scripts/bench_*.py: each runs the code under test beside its baseline in one run and
prints medians and their ratios (never a timing assert). They may import the engines, the jobs and testkit/."""
