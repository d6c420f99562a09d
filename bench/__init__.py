"""Benchmarks: reqlog and the alternatives measured side by side (not tests)."""
