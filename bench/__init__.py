"""Benchmarks: `bench/run` measures the Terra webhook ingest path against a bare baseline."""
