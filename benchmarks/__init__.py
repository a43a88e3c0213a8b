"""Throughput scripts and the PyTorch reference networks (benchmark/test-only, never library code)."""
