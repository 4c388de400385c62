"""Benchmarks: Xshathra against peers measured in the same run (see bench/README.md)."""
