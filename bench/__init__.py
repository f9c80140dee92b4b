"""Benchmarks: ``make bench`` (peer benchmark, ``bench.run``) and ``bench/smoke.py``."""
