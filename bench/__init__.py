"""Benchmarks of the CrossMed build, load and evaluation paths.

Run them all with ``python -m bench.run_all``, or one with ``python -m bench.<name>``.
Every figure is a ratio of two timings taken in the same run, because a
shared machine's absolute speed varies from minute to minute. The benchmarks
are not part of the pytest suite.
"""
