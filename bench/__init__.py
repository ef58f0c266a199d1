"""Benchmarks of the calcinosis CDS Hooks service (see bench/README.md)."""
