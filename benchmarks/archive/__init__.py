"""Scripts of answered investigations, kept to rerun them (benchmarks/README.md lists each with
its question and record); not part of the benchmark product."""
