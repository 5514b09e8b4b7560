"""Throughput and memory benchmarks (``make bench``); not tests, and never timed in CI."""
