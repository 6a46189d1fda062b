"""Benchmarks: learning curves, throughput and sample efficiency against published results."""
