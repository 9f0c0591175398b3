"""Executor backends: where task runners run."""
