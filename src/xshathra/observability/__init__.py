"""Operational visibility: Prometheus metrics."""
